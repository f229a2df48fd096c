from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Project console"

    def ready(self) -> None:
        from console import tools

        tools.register_console_tools()
