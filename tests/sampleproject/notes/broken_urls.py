"""A URLconf whose view module cannot be imported: the project cannot load."""
from django.urls import path

from notes import views_that_do_not_exist  # noqa: F401

urlpatterns = [path("", views_that_do_not_exist.index)]
