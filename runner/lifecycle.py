"""Making, starting, tearing down and removing containers: the steps, in order, each undone on failure.

    run:  create: claim the name -> resolve the image (images lock, shared) and write config.json
          -> hostname/hosts/resolv.conf -> cgroup with limits -> upper/work dirs
          then, while the init (runner/process.py) is forked and builds its rootfs, attach_network:
          sandbox + endpoints (libnetwork controller) -> this container's and its peers' hosts entries
          -> the init joins the sandbox's namespace, finishes and execs -> running
    exit: read the OOM flag -> record the exit (durably) -> remove the cgroup -> delete the sandbox
          (endpoints, addresses, netns) -> refresh peers' hosts files; the container directory (logs,
          upper dir) stays until rm
    rm:   the exit steps if still needed -> remove the directory -> release the name

Like a CNI plugin's cmdAdd, `create` reads top to bottom and undoes every earlier step when a later one
fails, so a failed run leaves nothing behind; so does attach_network for its own steps, and the monitor
removes the container (remove() is idempotent) when attaching or starting fails after create.
All of it runs in the monitor's worker thread (one Controller, one store connection, one netlink socket).
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from libnetwork.errors import InvalidArgument, NetctlError
from runner import cgroups, hosts, spec
from runner.container_plan import (
    DEFAULT_NETWORK,
    caller_hard_nofile,
    default_path,
    init_spec,
    network_plan,
    unshare_flags,
    write_etc_files,
)
from runner.images import ImageStore
from runner.paths import Layout
from runner.process import InitSpec
from runner.spec import NETWORK_HOST, ContainerConfig, RunRequest
from runner.state import EXITED, RUNNING, Container, ContainerState, Records, check_name, new_id, process_start_time
from runner.volumes import discard_made, resolve_binds

if TYPE_CHECKING:
    from libnetwork.controller import Controller

SANDBOX_LABEL = "netctl.container"
_ADJECTIVES = ("brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucid", "merry",
               "nimble", "proud", "quiet", "rapid", "sharp", "tidy", "vivid", "witty", "young", "zesty")  # fmt: skip
_NOUNS = ("ant", "bee", "cat", "dog", "elk", "fox", "gnu", "hen", "ibis", "jay", "kiwi", "lynx", "mole",
          "newt", "owl", "puma", "quail", "ram", "seal", "toad", "vole", "wren", "yak", "zebu")  # fmt: skip


def now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Prepared:
    """A container made but not started: its config and the init's plan."""

    config: ContainerConfig
    init: InitSpec
    cgroup: cgroups.Cgroup
    unshare_flags: int
    netns_path: str = ""  # set by attach_network; stays "" for --network host


@dataclass
class Undo:
    """Steps to undo, in reverse order of doing."""

    steps: list[Callable[[], Any]] = field(default_factory=list)

    def push(self, step: Callable[[], Any]) -> None:
        self.steps.append(step)

    def run(self) -> None:
        for step in reversed(self.steps):
            try:
                step()
            except Exception:  # noqa: BLE001 - undo as much as possible; the first error is what counts
                pass
        self.steps.clear()


_this: tuple[int, int] = (0, 0)  # this process's (pid, starttime): read once, again after a fork


def _this_process() -> tuple[int, int]:
    global _this
    if _this[0] != os.getpid():
        _this = (os.getpid(), process_start_time(os.getpid()))
    return _this


class Runtime:
    def __init__(self, layout: Layout, controller: Controller | None = None):
        """`controller`: a warm one to use (the agent's), not closed by close()."""
        self.layout = layout
        self.records = Records(layout)
        self.images = ImageStore(layout)
        self._controller: Controller | None = controller
        self._hierarchy: cgroups.Hierarchy | None = None

    @property
    def controller(self) -> Controller:
        if self._controller is None:
            from libnetwork.controller import Controller

            self._controller = Controller(self.layout.root)
        return self._controller

    @property
    def hierarchy(self) -> cgroups.Hierarchy:
        if self._hierarchy is None:
            self._hierarchy = cgroups.detect()
        return self._hierarchy

    def close(self) -> None:
        if self._controller is not None:
            self._controller.close()
            self._controller = None

    # --- run ------------------------------------------------------------------------------------

    def create(self, request: RunRequest) -> ContainerConfig:
        """The container's records, no process and no kernel object (Docker's `create`): see the
        module doc. Raises NetctlError, leaving nothing. prepare() and attach_network() start it."""
        mode, attachments = network_plan(request)
        limits = cgroups.Limits(
            memory=cgroups.parse_memory(request.memory) if request.memory else 0,
            cpus=cgroups.parse_cpus(request.cpus) if request.cpus else 0.0,
            pids=cgroups.parse_pids(request.pids_limit) if request.pids_limit else 0,
        )
        capabilities = spec.capability_set(request.cap_add, request.cap_drop)
        user = spec.parse_user(request.user)
        workdir = spec.check_workdir(request.workdir)
        hostname = spec.check_hostname(request.hostname) if request.hostname else ""
        if spec.parse_restart(request.restart)[0] != "no" and request.auto_remove:
            raise InvalidArgument(f"--restart {request.restart} and --rm conflict: a container removed when it "
                                  "exits cannot be started again; drop one of them")
        if request.stop_signal:  # refused now, not at the first stop
            spec.parse_signal(request.stop_signal)
        for text in request.tmpfs:
            spec.parse_tmpfs(text)
        for text in request.extra_hosts:
            spec.parse_extra_host(text)
        cgroup_parent = cgroups.parent_name(request.cgroup_parent)
        container_id = new_id()
        for attachment in attachments:  # an unknown network fails here, before any process exists
            self._ensure_network(attachment.network)
        undo = Undo()
        try:
            name = self._claim_name(request.name, container_id, undo)
            # Named volumes made as Docker does, once the name is ours: a failed create removes those it made.
            volumes = resolve_binds(self.layout, request.volumes,
                                    made=lambda v: undo.push(lambda: discard_made(self.layout, v)))
            config = self._config(request, container_id, name, mode, attachments, limits, volumes, capabilities,
                                  user, workdir, hostname, undo)  # fmt: skip
            config.cgroup_path = f"{cgroup_parent}/{container_id}"
            config.cgroup = self.hierarchy.to_dict()
            write_etc_files(self.records.directory(container_id), config)
            self.records.write_config(config)
            directory = self.records.directory(container_id)
            for sub in ("upper", "work", "rootfs"):
                os.makedirs(os.path.join(directory, sub), mode=0o755, exist_ok=True)
        except BaseException:
            undo.run()
            raise
        return config

    def prepare(self, config: ContainerConfig) -> Prepared:
        """Before each start (the first and every restart): the cgroup with its limits and the init's
        plan. The network follows in attach_network()."""
        cgroup = cgroups.Cgroup(cgroups.Hierarchy.from_dict(config.cgroup), config.cgroup_path)
        cgroup.create(config.limits)
        try:
            init = init_spec(self.layout, self.records.directory(config.id), config)
        except BaseException:
            cgroup.remove()
            raise
        return Prepared(config=config, init=init, cgroup=cgroup, unshare_flags=unshare_flags(config.network_mode))

    def attach_network(self, prepared: Prepared) -> None:
        """The sandbox, its endpoints and the hosts entries they bring (this container's and its peers'),
        then config.json with the sandbox. Undoes its own steps on failure; the caller removes the rest."""
        config = prepared.config
        undo = Undo()
        try:
            prepared.netns_path = self._network(config, undo)
            self.records.write_config(config)
            networks = hosts.networks_of(self.controller, config.sandbox_id) if config.sandbox_id else set()
            if networks:  # its own hosts entries; the name server serves its namespace before it starts
                hosts.refresh(self.controller, self.layout, sandboxes=[config.sandbox_id], start_agent=True)
            if config.sandbox_id:
                self._await_links_in_service(config.sandbox_id, prepared.netns_path)
        except BaseException:
            undo.run()
            raise

    def rename_sandbox(self, sandbox_id: str, name: str) -> None:
        """A running container's new name on its networks: the sandbox, then the hosts files that
        name it (the name server follows the library's names-changed)."""
        from libnetwork.errors import NotFound

        try:
            self.controller.rename_sandbox(sandbox_id, name)
        except NotFound:
            return  # it stopped meanwhile: the next start makes the sandbox with the new name
        hosts.refresh(self.controller, self.layout, sandboxes=[sandbox_id])

    def _await_links_in_service(self, sandbox_id: str, netns_path: str) -> None:
        from runner.links import await_in_service

        await_in_service(self.controller, sandbox_id, netns_path)

    def _claim_name(self, wanted: str, container_id: str, undo: Undo) -> str:
        if wanted:
            name = check_name(wanted)
            self.records.claim_name(name, container_id)
        else:
            name = ""
            for _ in range(20):
                candidate = f"{secrets.choice(_ADJECTIVES)}_{secrets.choice(_NOUNS)}_{secrets.token_hex(2)}"
                try:
                    self.records.claim_name(candidate, container_id)
                    name = candidate
                    break
                except NetctlError:
                    continue
            if not name:
                raise NetctlError("cannot find a free container name; give one with --name")
        undo.push(lambda: self.records.release_name(name, container_id))
        return name

    def _config(self, request, container_id, name, mode, attachments, limits, volumes, capabilities, user, workdir,
                hostname, undo) -> ContainerConfig:  # fmt: skip
        directory = self.records.directory(container_id)
        with self.images.locked(exclusive=False):  # image rm waits until config.json records the use
            image = self.images.get(request.image)
            run = image.run_config
            argv = spec.resolve_argv(run.get("Entrypoint"), run.get("Cmd"), request)
            if mode == NETWORK_HOST:
                import socket

                hostname = hostname or socket.gethostname()
            hostname = hostname or container_id[:12]
            env = spec.merge_env(
                [f"PATH={default_path()}"], run.get("Env") or [], [f"HOSTNAME={hostname}"], request.env
            )
            if request.tty:
                env = spec.merge_env(["TERM=xterm"], env)
            config = ContainerConfig(
                id=container_id,
                name=name,
                created=now(),
                image=request.image,
                image_id=image.id,
                layers=list(image.layers),
                argv=argv,
                env=env,
                workdir=workdir or run.get("WorkingDir") or "/",
                user=user or run.get("User") or "",
                hostname=hostname,
                tty=request.tty,
                interactive=request.interactive,
                auto_remove=request.auto_remove,
                read_only=request.read_only,
                volumes=volumes,
                capabilities=capabilities,
                limits=limits,
                network_mode=mode,
                networks=attachments,
                nofile=spec.nofile_limit(caller_hard_nofile(request)),
                labels=dict(request.labels),
                restart=request.restart,
                stop_signal=request.stop_signal or run.get("StopSignal") or "",  # the image's STOPSIGNAL too
                stop_timeout=request.stop_timeout,
                stdin_once=request.stdin_once,
                tmpfs=list(request.tmpfs),
                extra_hosts=list(request.extra_hosts),
                **spec.dns_settings(request),
                docker=dict(request.docker),
                sysctls=spec.check_sysctls(request.sysctls, mode),
                ulimits=spec.check_ulimits(request.ulimits),
                shm_size=max(0, int(request.shm_size)),
                healthcheck=(dict(request.healthcheck) if request.healthcheck  # {"argv": []}: NONE
                             else spec.parse_healthcheck(run.get("Healthcheck") or {})),  # the image's
            )
            self.images.lowerdirs(image)  # every layer present, or NotFound now
            os.makedirs(directory, mode=0o700)
            undo.push(lambda: shutil.rmtree(directory, ignore_errors=True))
            self.records.write_state(container_id, ContainerState())
            self.records.write_config(config)
        return config

    def _network(self, config: ContainerConfig, undo: Undo) -> str:
        if config.network_mode == NETWORK_HOST:
            return ""
        ctl = self.controller
        sandbox = ctl.create_sandbox(
            config.name, hostname=config.hostname, labels={SANDBOX_LABEL: config.id}, container_id=config.id
        )
        undo.push(lambda: self._delete_sandbox(sandbox.id))
        config.sandbox_id = sandbox.id
        from libnetwork.model import PortMapping

        for attachment in config.networks:
            ctl.connect(
                attachment.network,
                sandbox.id,
                ip=attachment.ip,
                aliases=attachment.aliases,
                ports=[PortMapping(**p) for p in attachment.ports],
                mac=attachment.mac,
            )
        return sandbox.netns_path

    def _ensure_network(self, name: str) -> None:
        with self.controller.store.snapshot() as tx:
            if tx.get_network(name) is not None:
                return
        if name != DEFAULT_NETWORK:
            self.controller.resolve_network(name)  # a global (overlay) network, or NotFound
            return
        from libnetwork.controller import NetworkSpec
        from libnetwork.errors import AlreadyExists

        try:
            self.controller.create_network(NetworkSpec(name=DEFAULT_NETWORK))
        except AlreadyExists:
            pass  # made by a concurrent run

    def _delete_sandbox(self, sandbox_id: str, *, vacated: bool = False) -> None:
        """Delete the sandbox, its endpoints and addresses. `vacated`: no process of the container is
        left (its cgroup is gone), so its namespace handle goes first and the kernel removes the
        namespace with its veth pairs in the background (drivers/bridge.py leave() then skips the
        synchronous link delete, ~20 ms of RCU barrier each)."""
        networks = hosts.networks_of(self.controller, sandbox_id)
        if vacated:
            from libnetwork import netns

            with self.controller.store.snapshot() as tx:
                sandbox = tx.get_sandbox(sandbox_id)
            if sandbox is not None and not sandbox.external:
                netns.delete(sandbox.netns_path)
        self.controller.delete_sandbox(sandbox_id, force=True)
        if networks:  # its peers' files hold no trace of it: only the name server is told
            hosts.sync_names(self.controller.root)

    def network_views(self, config: ContainerConfig) -> dict[str, dict]:
        """{network name: endpoint facts} for inspect, read once the container runs."""
        if not config.sandbox_id:
            return {}
        from runner.views import endpoint_view

        with self.controller.store.snapshot() as tx:
            attached = [(endpoint, tx.get_network(endpoint.network_id))
                        for endpoint in tx.list_endpoints(sandbox_id=config.sandbox_id)]  # fmt: skip
        views = {}
        for endpoint, network in attached:
            if network is None:
                network = self._global_network(endpoint.network_id)
            if network is None:
                continue
            view = endpoint_view(endpoint)
            pools = network.pools_of(4)
            view["Gateway"] = pools[0].gateway if pools else ""
            view["NetworkID"] = network.id
            views[network.name] = view
        return views

    def _global_network(self, network_id: str):
        """An overlay network lives in etcd, not in SQLite. Asked only when a store is configured; with
        etcd away, inspect and ps just leave that network out rather than fail."""
        if not self.controller.store_url:
            return None
        try:
            return self.controller.resolve_network(network_id)
        except NetctlError:
            return None

    # --- exit and removal -----------------------------------------------------------------------

    @staticmethod
    def _cgroup(config: ContainerConfig) -> cgroups.Cgroup | None:
        if not (config.cgroup_path and config.cgroup):
            return None
        return cgroups.Cgroup(cgroups.Hierarchy.from_dict(config.cgroup), config.cgroup_path)

    def freeze(self, config: ContainerConfig, frozen: bool) -> None:
        cgroup = self._cgroup(config)
        if cgroup is None:
            raise InvalidArgument(f"container {config.name!r} has no cgroup of its own to freeze")
        cgroup.freeze(frozen)

    def frozen(self, config: ContainerConfig) -> bool:
        cgroup = self._cgroup(config)
        return cgroup is not None and cgroup.frozen()

    def oom_killed(self, config: ContainerConfig) -> bool:
        """Read before teardown: the OOM counter goes with the cgroup."""
        cgroup = self._cgroup(config)
        return cgroup.oom_killed() if cgroup is not None else False

    def host_links(self, config: ContainerConfig) -> list[str]:
        """The host-side interfaces of the container's endpoints now (read before a teardown)."""
        from runner.links import host_ends

        return host_ends(self.controller, config.sandbox_id) if config.sandbox_id else []

    def teardown(self, config: ContainerConfig, *, lazy_links: bool = True) -> None:
        """Release what only a running container needs: cgroup, sandbox. Idempotent. `lazy_links`: the
        kernel may remove the veth pairs just after we return (see _delete_sandbox); False deletes them
        before, for a failed start whose error must find nothing left behind."""
        cgroup = self._cgroup(config)
        if cgroup is not None:
            cgroup.kill_all()
            cgroup.remove()  # raises while a process is left in it
        if config.sandbox_id:
            self._delete_sandbox(config.sandbox_id, vacated=lazy_links and cgroup is not None)

    def remove(self, container: Container, *, lazy_links: bool = True) -> None:
        """Teardown, then the directory and the name. Idempotent."""
        self.teardown(container.config, lazy_links=lazy_links)
        shutil.rmtree(self.records.directory(container.id), ignore_errors=True)
        self.records.release_name(container.name, container.id)

    def record_exit(self, container_id: str, state: ContainerState, code: int, oom: bool, error: str = "") -> None:
        state.status = EXITED
        state.paused = False
        state.exit_code = code
        state.oom_killed = oom
        state.finished = now()
        state.pid = 0
        state.error = error or state.error
        self.records.write_state(container_id, state)

    @staticmethod
    def claim(state: ContainerState) -> bool:
        """Name this process the container's monitor in `state` (its pid and starttime, which tell
        `logs --follow` whether the record can still change); whether that changed anything."""
        mine = _this_process()
        if (state.monitor_pid, state.monitor_start) == mine:
            return False
        state.monitor_pid, state.monitor_start = mine
        return True

    def record_running(self, container_id: str, state: ContainerState, pid: int, pid_start: int,
                       networks: dict, *, health: bool = False) -> None:
        state.status = RUNNING
        state.paused = False
        state.manually_stopped = False
        state.health = {"Status": "starting", "FailingStreak": 0, "Log": []} if health else {}
        state.error = ""
        state.exit_code = None
        state.pid = pid
        state.pid_start = pid_start
        state.started = now()
        self.claim(state)
        state.networks = networks
        self.records.write_state(container_id, state)
