from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

# ReDoc styles itself with inline <style> elements (styled-components) and searches in a blob: worker: its
# page alone gets them, on top of the policy in config/settings/security.py.
redoc = csp_update({"style-src": [SELF, UNSAFE_INLINE], "worker-src": [SELF, "blob:"]})(
    SpectacularRedocView.as_view(url_name="schema")
)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI with its start script as a separate response (no inline script under the CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", redoc, name="redoc"),
    path("api/", include("core.api.urls")),
    path("api/", include("studies.api.urls")),
    path("api/", include("labeling.api.urls")),
    path("api/", include("ml.api.urls")),
    path("api/", include("annotation.api.urls")),
    path("api/", include("releases.api.urls")),
    path("api/", include("pacs.api.urls")),
    path("console/", include("console.urls")),
    path("", include("annotation.urls")),
    path("", include("pacs.urls")),
    path("", include("core.urls")),
]
