from django.urls import path

from annotation import ui

urlpatterns = [
    path("review/login/", ui.ReviewLogin.as_view(), name="review-login"),
    path("review/<slug:slug>/", ui.review, name="review"),
]
