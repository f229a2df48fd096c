from django.urls import path

from pacs import ui

urlpatterns = [path("pacs/<slug:slug>/", ui.pacs_page, name="pacs-page")]
