from django.urls import path

from benchsite import views

urlpatterns = [
    path("tiny", views.tiny),
    path("tiny-async", views.tiny_async),
    path("page", views.page),
    path("io", views.io),
]
