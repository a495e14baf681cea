from django.contrib import admin
from django.urls import path

from demosite import views

urlpatterns = [
    path("", views.index, name="index"),
    path("hello", views.hello, name="hello"),
    path("admin/", admin.site.urls),
]
