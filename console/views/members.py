"""Members and roles: add a person by user name, change a role, remove a member (managers)."""

from django.contrib import messages
from django.contrib.auth import get_user_model

from console.selectors import project_members
from console.views.base import allow, back_to, console_page, render_page
from core.errors import FieldError
from core.models import Role
from core.selectors import role_require
from core.services import membership_change, membership_remove


def _user_named(name: str):
    name = (name or "").strip()
    if not name:
        raise FieldError("username", "enter the user name of the person to add")
    found = get_user_model().objects.filter(username=name, is_active=True).first()
    if found is None:
        raise FieldError("username", f"no active user is named {name!r} (an administrator creates accounts)")
    return found


@allow("get", "post")
@console_page("console-members")
def members_page(request, project):
    """GET: the members with their roles. POST ``username`` + ``role``: add that person or change their
    role (a project keeps at least one manager)."""
    if request.method == "POST":
        role_require(request.user, project, [Role.MANAGER], "managers")
        user = _user_named(request.POST.get("username", ""))
        role = request.POST.get("role", "")
        if role not in Role.values:
            raise FieldError("role", f"choose one of {', '.join(Role.values)}")
        known = project_members(request.user, project).filter(user=user).first()
        membership_change(project=project, user=user, role=role)
        verb = "is now" if known else "was added as"
        messages.success(request, f"{user.username} {verb} {role} of {project.slug}.")
        return back_to("console-members", project.slug)
    return render_page(
        request,
        project,
        "console/members.html",
        {"members": project_members(request.user, project), "roles": Role.values},
        tool="members",
    )


@allow("post")
@console_page("console-members")
def member_remove(request, project, user_id: int):
    role_require(request.user, project, [Role.MANAGER], "managers")
    membership = project_members(request.user, project).filter(user_id=user_id).first()
    if membership is None:
        raise FieldError("user", f"user {user_id} is not a member of {project.slug}")
    membership_remove(project=project, user=membership.user)
    messages.success(request, f"{membership.user.username} was removed from {project.slug}.")
    return back_to("console-members", project.slug)
