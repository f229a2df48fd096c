"""API tokens (django-rest-knox): made from a user name and password, expiring after
``API_TOKEN_TTL_HOURS``, revoked one at a time or all together. Failed attempts count towards the
django-axes lockout of that user name from that address, as the login pages' do."""

from django.conf import settings
from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema, inline_serializer
from knox.models import get_token_model
from knox.views import LoginView, LogoutAllView, LogoutView
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.settings import api_settings

from core.errors import ApplicationError


class TokenIn(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})


TokenOut = inline_serializer(
    "TokenOut", {"token": serializers.CharField(), "expiry": serializers.DateTimeField()}
)


class TokenCreate(LoginView):
    """``POST /api/auth/token/`` with ``username`` and ``password``: a new token and when it expires. 400
    when they do not match an active user; 429 while that user name is locked out from this address."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=TokenIn, responses={200: TokenOut})
    def post(self, request, format=None):
        data = TokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        # The DRF request goes to authenticate(): django-axes counts the attempt by user name and address
        # and marks the request when it is locked out.
        user = authenticate(request=request, **data.validated_data)
        if getattr(request, "axes_locked_out", False):
            raise ApplicationError(settings.AXES_COOLOFF_MESSAGE, field="username", status=429)
        if user is None:
            raise ApplicationError("username and password do not match an active user", field="password")
        request.user = user
        return super().post(request, format=format)


@extend_schema(request=None, responses={204: None})
class TokenRevoke(LogoutView):
    """``POST /api/auth/token/revoke/`` with ``Authorization: Token <token>``: that token stops working. 400
    for a request that carries no token (a browser session)."""

    authentication_classes = api_settings.DEFAULT_AUTHENTICATION_CLASSES

    def post(self, request, format=None):
        if not isinstance(request.auth, get_token_model()):
            raise ApplicationError("send the token to revoke as Authorization: Token <token>", field="token")
        return super().post(request, format=format)


@extend_schema(request=None, responses={204: None})
class TokenRevokeAll(LogoutAllView):
    """``POST /api/auth/token/revoke-all/``: every token of the caller stops working (with a token or from a
    browser session, for example after a token leaked)."""

    authentication_classes = api_settings.DEFAULT_AUTHENTICATION_CLASSES
