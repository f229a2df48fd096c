from django.apps import AppConfig


class PacsConfig(AppConfig):
    name = "pacs"
    verbose_name = "PACS over DICOMweb"

    def ready(self) -> None:
        # the managers' page listed among the project's tools in the console (the page checks access itself)
        from console.tools import ProjectTool, register

        register(
            ProjectTool(
                key="pacs",
                label="DICOMweb sources (PACS)",
                url_name="pacs-page",
                description="Find studies in the hospital's PACS, import them, send accepted masks back",
                order=35,
            )
        )
