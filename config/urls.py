from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/", include("core.api.urls")),
    path("api/", include("studies.api.urls")),
    path("api/", include("labeling.api.urls")),
    path("api/", include("ml.api.urls")),
    path("api/", include("annotation.api.urls")),
    path("api/", include("releases.api.urls")),
    path("", include("annotation.urls")),
    path("", include("core.urls")),
]
