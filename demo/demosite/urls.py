from django.contrib import admin
from django.urls import path

from demosite import views

urlpatterns = [
    path("", views.index, name="index"),
    path("hello", views.hello, name="hello"),
    path("hello-async", views.hello_async, name="hello-async"),
    path("ticks", views.ticks, name="ticks"),
    path("admin/", admin.site.urls),
]
