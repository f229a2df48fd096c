"""The project overview's list of tools: a registry other apps extend from their ``AppConfig.ready()``.

A tool is a link on every project's overview page (``/console/<slug>/``): its label, a one-line purpose and
the URL name it opens (reversed with the project's slug). An app that brings its own manager page (a
DICOMweb source, say) registers it without touching the console's files::

    from console.tools import ProjectTool, register

    register(ProjectTool(key="pacs", label="DICOMweb sources", url_name="pacs-sources",
                         description="Pull studies from a PACS", order=35))

The page still checks access itself: listing a tool here grants nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse


@dataclass(frozen=True)
class ProjectTool:
    key: str  # unique; registering the same key again replaces the tool
    label: str
    url_name: str  # a route that takes the project's slug as its one argument
    description: str = ""
    order: int = 100  # lower first


_TOOLS: dict[str, ProjectTool] = {}


def register(tool: ProjectTool) -> None:
    _TOOLS[tool.key] = tool


def tools_for_project(slug: str) -> list[dict[str, str]]:
    """Every registered tool as ``{"key", "label", "description", "url"}``, in order; a tool whose route
    is not in the URLconf (an app switched off) is left out."""
    out = []
    for tool in sorted(_TOOLS.values(), key=lambda t: (t.order, t.label)):
        try:
            url = reverse(tool.url_name, args=[slug])
        except NoReverseMatch:
            continue
        out.append({"key": tool.key, "label": tool.label, "description": tool.description, "url": url})
    return out


def register_console_tools() -> None:
    for order, (key, label, url_name, description) in enumerate(
        [
            ("members", "Members and roles", "console-members", "Add people, change or remove their role"),
            ("uploads", "Uploads", "console-uploads", "Scans (files or zip archives), reports, gaze"),
            ("labels", "Label runs", "console-labels", "Report labels (rules or LLM) and gaze labels"),
            ("preannotate", "Pre-annotation", "console-preannotate", "Generators and registered models"),
            ("tasks", "Tasks from proposals", "console-tasks", "Findings and review tasks from labels"),
            ("queue", "Queue status", "console-queue", "Open, held and done work per person"),
            ("releases", "Releases and exports", "console-releases", "Freeze versions, export, download"),
            ("jobs", "Jobs", "console-jobs", "Every background job of the project"),
        ]
    ):
        register(
            ProjectTool(key=key, label=label, url_name=url_name, description=description, order=order * 10)
        )
