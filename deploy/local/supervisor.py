"""The real process supervisor (supervisord) that runs the local stack: its config,
rendered from the component list, and a small client over its XML-RPC unix socket.

Every program restarts automatically when it dies (autorestart), so a SIGKILLed
service or sidecar comes back on its own; stop and kill act on the whole process group."""

from __future__ import annotations

import subprocess
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport

from deploy.local import paths
from deploy.local.components import Component

PRIORITY = {"infra": 100, "services": 200, "sim": 300}


def _quote(arg: str) -> str:
    return arg if arg and all(c not in arg for c in " \"'%") else '"' + arg.replace('"', '\\"') + '"'


def render(components: list[Component], run: Path) -> str:
    logs = run / "logs"
    lines = [
        "[unix_http_server]",
        f"file={run / 'supervisor.sock'}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={logs / 'supervisord.log'}",
        f"pidfile={run / 'supervisord.pid'}",
        f"childlogdir={logs}",
        "loglevel=info",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{run / 'supervisor.sock'}",
        "",
    ]
    for component in components:
        environment = ",".join(f'{key}="{value}"' for key, value in component.environment.items())
        lines += [
            f"[program:{component.name}]",
            "command=" + " ".join(_quote(arg) for arg in component.command).replace("%", "%%"),
            f"directory={run}",
            f"priority={PRIORITY[component.group]}",
            "autostart=false",
            "autorestart=true",
            "startsecs=1",
            "startretries=20",
            f"stopsignal={component.stopsignal}",
            f"stopwaitsecs={component.stopwaitsecs}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={logs / (component.name + '.log')}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=1",
        ]
        if component.user:
            lines.append(f"user={component.user}")
        if environment:
            lines.append(f"environment={environment}")
        lines.append("")
    return "\n".join(lines)


class Supervisor:
    def __init__(self, run: Path) -> None:
        self.run = run
        self.socket = run / "supervisor.sock"
        self.conf = run / "supervisord.conf"

    def _rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self._rpc().getState()["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Fault):
            return False

    def pid(self) -> int | None:
        pidfile = self.run / "supervisord.pid"
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def launch(self) -> None:
        """Starts supervisord (it daemonizes) or makes a running one reread its config."""
        supervisord = paths.VENV / "bin" / "supervisord"
        if self.running():
            subprocess.run(
                [str(paths.VENV / "bin" / "supervisorctl"), "-c", str(self.conf), "update"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            return
        subprocess.run([str(supervisord), "-c", str(self.conf)], check=True)

    def start(self, name: str) -> None:
        info = self.info(name)
        if info["statename"] in ("RUNNING", "STARTING"):
            return
        self._rpc().startProcess(name, False)

    def stop(self, name: str) -> None:
        """Stops one program and keeps it stopped (unlike a kill, which it restarts)."""
        self._rpc().stopProcess(name, True)

    def stop_nowait(self, name: str) -> None:
        """Asks supervisord to stop one program (it sends the stop signal) without waiting:
        a drill then kills it itself, and supervisord keeps it stopped."""
        self._rpc().stopProcess(name, False)

    def restart_if_running(self, name: str) -> None:
        if self.info(name)["statename"] == "RUNNING":
            self._rpc().stopProcess(name, True)
            self._rpc().startProcess(name, False)

    def info(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._rpc().getProcessInfo(name)
        return result

    def all_info(self) -> dict[str, dict[str, Any]]:
        return {entry["name"]: entry for entry in self._rpc().getAllProcessInfo()}

    def stop_all(self) -> None:
        self._rpc().stopAllProcesses(True)

    def shutdown(self) -> None:
        self._rpc().shutdown()
