"""The hosts of an Ansible inventory, for `edgekit bench ARTIFACT --inventory FILE [--limit PATTERN]`.

Contract of `read_inventory(path, limit=None) -> list[InventoryHost]`:

- The file is read by Ansible itself (ansible-core, the `fleet` extra): `DataLoader`,
  `InventoryManager` with Ansible's `yaml` and `ini` inventory plugins, and `VariableManager`, so
  children groups, `group_vars/` and `host_vars/` folders beside the file, and the precedence of
  host vars over group vars (and of deeper groups over shallower ones) are exactly Ansible's.
  Only those two plugins are enabled: reading never runs an inventory script or a dynamic
  inventory plugin. As in Ansible, a file named .yml, .yaml, .json or without a suffix is tried
  as YAML, then as INI; any other name is read as INI only.
- `limit` is an Ansible host pattern, applied as `ansible-playbook --limit` applies it (a group,
  a host, `a:b`, `a:&b`, `a:!b`, `~regex`, `web[0:2]`, `@file`); None or "" means every host.
  Hosts come back each once, in the order they first appear in the file, whatever the
  pattern's order (Ansible's own `order: inventory` walks the groups level by level instead, so
  there a host of a nested group comes after the hosts of shallower ones).
- Per host, from the variables Ansible merged for it (the same names Ansible's ssh connection
  plugin reads; where a name and its older alias are both set, the one that plugin prefers wins,
  which is the `ansible_ssh_*` alias):
  `destination` is `ansible_host`/`ansible_ssh_host` (else the inventory name), prefixed with
  `ansible_user@`/`ansible_ssh_user@` when a user is set. `ssh_options` are `Key=Value` strings
  for `ssh -o`, in the order Ansible's ssh command line has them (ssh keeps the first value of an
  option): `Port=` (`ansible_port`/`ansible_ssh_port`), `IdentityFile=`
  (`ansible_private_key_file`/`ansible_ssh_private_key_file`, `~` expanded), then what
  `ansible_ssh_common_args` and `ansible_ssh_extra_args` hold: only `-o KEY=VALUE` (also
  `-oKEY=VALUE`, `-o "KEY VALUE"`), `-i FILE` and `-p PORT`; any other argument is an error
  naming the host and the argument (put such settings in ~/.ssh/config). `python` is
  `ansible_python_interpreter`, None when unset or one of Ansible's `auto*` discovery modes.
  `groups` are every group the host is in, parents included, without `all` and `ungrouped`,
  sorted. Ansible's config defaults (remote_user in ansible.cfg and the like) are not applied:
  what the inventory does not say is left to ssh and ~/.ssh/config.
- Values of those variables that are Jinja templates are rendered by Ansible's Templar with the
  host's variables (`"{{ inventory_hostname }}.lan"`, `"{{ inventory_dir }}/keys/id"`); a
  template Ansible cannot render from the inventory alone (facts, another host's vars, an
  undefined variable) or one that calls a lookup is an error: reading runs nothing and reads no
  other file.
- A host whose `ansible_connection` is not ssh (or paramiko) is an error: edgekit reaches
  devices over SSH only.
- Every failure is one `EdgekitError(problem, fix)`: the file missing or a directory; a file
  Ansible cannot parse (Ansible itself only warns and carries on with an empty inventory; here
  that is an error with Ansible's reason); an inventory without hosts; a `limit` that is not a
  pattern or matches no host (the error names the groups there are); ansible-core missing.
- Nothing Ansible prints reaches stdout or stderr: its Display and Python warnings are captured
  for the call (so, like any redirect of sys.stdout, it is not meant to run beside other threads
  printing). ansible-core is imported inside the call, never by `import edgekit.device.inventory`.
  Ansible wants a local temp folder when it is first imported (~/.ansible/tmp by default, which
  fails when HOME is not writable): unless ANSIBLE_LOCAL_TEMP is set, the call sets it to the
  system temp folder for the import and restores the environment after; Ansible removes its
  folder there at exit. Nothing is written into the current folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from edgekit import native
from edgekit.errors import EdgekitError

FLEET_FIX = "install the fleet extra: pip install 'edgekit[fleet]'"

# For each field, the variables Ansible's ssh connection plugin reads for it, in the plugin's order:
# when several are set the last one wins (ansible.config.manager's _loop_entries). Checked against
# the plugin's own definitions by tests/test_inventory.py.
HOST_VARS = ("ansible_host", "ansible_ssh_host")
USER_VARS = ("ansible_user", "ansible_ssh_user")
PORT_VARS = ("ansible_port", "ansible_ssh_port")
KEY_VARS = ("ansible_private_key_file", "ansible_ssh_private_key_file")
ARGS_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
PYTHON_VAR = "ansible_python_interpreter"
SSH_CONNECTIONS = {"ssh", "paramiko", "paramiko_ssh", "smart",
                   "ansible.builtin.ssh", "ansible.builtin.paramiko_ssh", "ansible.legacy.ssh"}
# ansible_python_interpreter values that ask Ansible to discover the interpreter, not name one
AUTO_PYTHON = {"auto", "auto_silent", "auto_legacy", "auto_legacy_silent"}
INVENTORY_PLUGINS = ("yaml", "ini")  # short names: FQCNs need the collection loader set up
YAML_SUFFIXES = {".yml", ".yaml", ".json"}  # the yaml plugin's default yaml_extensions (and no suffix)
_OPTION = re.compile(r"\s*([A-Za-z][A-Za-z0-9]*)\s*(?:=\s*|\s+)(\S.*)$", re.DOTALL)
_TEMPLATE_MARKS = ("{{", "{%", "{#")
@dataclass(frozen=True)
class InventoryHost:
    name: str                      # inventory_hostname
    destination: str               # what `ssh` is given: "user@host" or "host"
    ssh_options: tuple[str, ...]   # "Key=Value" options for `ssh -o`
    python: str | None             # ansible_python_interpreter, if set
    groups: tuple[str, ...]        # the host's groups (parents too), without all/ungrouped, sorted


def read_inventory(path: Path, limit: str | None = None) -> list[InventoryHost]:
    """The hosts of the Ansible inventory file `path` that the host pattern `limit` selects (all
    when None), in the order they first appear in the file; see the module docstring for the contract.

    Ansible is imported in a child interpreter (edgekit.native), never in this process: importing
    ansible-core patches process-wide state (sys.intern among it, which torch's compiler then
    refuses to import beside), and its Display owns the terminal."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"inventory file {path} does not exist",
                           "pass the path of an Ansible inventory file (YAML or INI) to --inventory")
    if path.is_dir():
        raise EdgekitError(f"inventory {path} is a directory",
                           "pass the inventory file itself (group_vars/ and host_vars/ beside it are read)")
    if not path.is_file():
        raise EdgekitError(f"inventory {path} is not a regular file (a pipe or a device?)",
                           "pass the inventory file itself")
    with open(path, "rb") as f:
        executable = os.access(path, os.X_OK) and f.read(2) == b"#!"
    if executable:
        raise EdgekitError(f"inventory {path} is a script (a dynamic inventory): edgekit never runs one",
                           f"write its hosts to a file and pass that: ansible-inventory -i {path} --list -y > hosts.yml")
    if importlib.util.find_spec("ansible") is None:
        raise EdgekitError("reading an Ansible inventory needs ansible-core, which is not installed", FLEET_FIX)
    return native.call("edgekit.device.inventory:read_inventory_here", Path(os.path.abspath(path)), limit,
                       library="ansible-core", what=f"reading the inventory {path}", timeout_s=120)


def read_inventory_here(path: Path, limit: str | None = None) -> list[InventoryHost]:
    """read_inventory in this process (ansible-core imported here: see read_inventory)."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ansible = _import_ansible()
        return _read(ansible, Path(os.path.abspath(path)), limit)  # not resolve(): Ansible keeps symlinks


def _import_ansible() -> dict:
    """ansible-core's pieces, imported now (with a temp folder Ansible can write, see the docstring)."""
    added = "ANSIBLE_LOCAL_TEMP" not in os.environ
    if added:
        os.environ["ANSIBLE_LOCAL_TEMP"] = tempfile.gettempdir()
    try:
        from ansible.errors import AnsibleError
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.plugins.loader import inventory_loader
        from ansible.template import Templar
        from ansible.vars.manager import VariableManager
    except ImportError as e:
        raise EdgekitError(f"reading an Ansible inventory needs ansible-core, which is not installed ({e})",
                           FLEET_FIX) from None
    except Exception as e:  # ansible.constants failing on its config or temp folder, for one
        raise EdgekitError(f"ansible-core could not start: {_one_line(e)}",
                           "check ANSIBLE_CONFIG/ansible.cfg, or set ANSIBLE_LOCAL_TEMP to a writable folder") from None
    finally:
        if added:
            os.environ.pop("ANSIBLE_LOCAL_TEMP", None)
    return {"AnsibleError": AnsibleError, "InventoryManager": InventoryManager, "DataLoader": DataLoader,
            "inventory_loader": inventory_loader, "Templar": Templar, "VariableManager": VariableManager}


def _read(ansible: dict, path: Path, limit: str | None) -> list[InventoryHost]:
    AnsibleError = ansible["AnsibleError"]
    failures: list[tuple[str, Exception]] = []
    loader = ansible["DataLoader"]()
    loader.set_basedir(str(path.parent))
    manager = _manager_class(ansible)(loader, str(path), failures)
    try:
        manager.parse_sources(cache=False)
    except AnsibleError as e:  # an ansible.cfg with [inventory] unparsed_is_failed / any_unparsed_is_failed
        failures.append(("", e))
    if not manager.parsed:
        raise EdgekitError(f"Ansible cannot parse the inventory {path}: {_reason(path, failures)}",
                           ("fix the file" if not path.suffix or path.suffix.lower() in YAML_SUFFIXES else
                            f"fix the file (if it is YAML, name it .yml: Ansible reads a {path.suffix} file as INI)")
                           + f" and check it with `ansible-inventory -i {shlex.quote(str(path))} --list`")

    # file order: the order hosts first appear in the file (Ansible's own `order: inventory` walks
    # the groups level by level, so a host of a nested group comes after those of shallower ones)
    every = [h for h in manager.hosts.values() if not getattr(h, "implicit", False)]
    if not every:
        raise EdgekitError(f"the inventory {path} lists no hosts",
                           "add the devices to it (YAML: all: hosts: NAME: {ansible_host: ADDRESS}, "
                           "or in INI a line `NAME ansible_host=ADDRESS`)")
    hosts = every
    if limit and limit.strip():
        try:
            manager.subset(limit)
            chosen = {h.name for h in manager.get_hosts("all")}
        except AnsibleError as e:
            raise EdgekitError(f"--limit {limit!r} is not a host pattern Ansible accepts: {_one_line(e)}",
                               "pass a group, a host, or patterns such as 'a:b', 'a:&b', 'a:!b'") from None
        hosts = [h for h in every if h.name in chosen]
        if not hosts:
            groups = sorted(name for name in manager.groups if name not in ("all", "ungrouped"))
            shown = ", ".join(groups[:30]) + (f" and {len(groups) - 30} more" if len(groups) > 30 else "")
            raise EdgekitError(f"--limit {limit!r} matches no host of {path}",
                               f"pass one of its groups ({shown or 'it has none besides all'}), "
                               "a host name, or a pattern of them")

    variables = ansible["VariableManager"](loader=loader, inventory=manager)
    return [_host(ansible, loader, h, variables.get_vars(host=h, include_hostvars=False)) for h in hosts]


def _manager_class(ansible: dict):
    """InventoryManager with only the yaml and ini plugins, each writing down why it failed
    (Ansible itself only prints that as a warning)."""

    class Recording:
        """An inventory plugin whose failures are written down."""

        def __init__(self, plugin, failures):
            self._plugin = plugin
            self._failures = failures

        def __getattr__(self, name):
            return getattr(self._plugin, name)

        def parse(self, inventory, loader, source, cache=True):
            try:
                return self._plugin.parse(inventory, loader, source, cache=cache)
            except Exception as e:
                self._failures.append((str(getattr(self._plugin, "_load_name", "")), e))
                raise

    class Manager(ansible["InventoryManager"]):
        def __init__(self, loader, source: str, failures: list):
            self._failures = failures
            self.parsed = False
            super().__init__(loader, sources=[source], parse=False)

        def parse_source(self, source, cache=False):
            parsed = super().parse_source(source, cache=cache)
            self.parsed = self.parsed or bool(parsed)
            return parsed

        def _fetch_inventory_plugins(self):
            plugins = []
            for name in INVENTORY_PLUGINS:
                plugin = ansible["inventory_loader"].get(name)
                if plugin is None:
                    raise ansible["AnsibleError"](f"Ansible's {name} inventory plugin is not available")
                plugins.append(Recording(plugin, self._failures))
            return plugins

    return Manager


def _reason(path: Path, failures: list[tuple[str, Exception]]) -> str:
    """Why the plugin meant for this file (yaml for .yml/.yaml/.json, else ini) refused it."""
    if not failures:
        return "no inventory plugin accepted it"
    by_plugin = {plugin.rsplit(".", 1)[-1]: e for plugin, e in reversed(failures)}  # the first of each

    def said(error):
        line = _line_of(error)
        return _one_line(error, 200) + (f" (line {line})" if line else "")

    if not path.suffix and "yaml" in by_plugin and "ini" in by_plugin:  # no suffix: tried as both
        return f"as YAML: {said(by_plugin['yaml'])}, as INI: {said(by_plugin['ini'])}"
    wanted = "yaml" if path.suffix.lower() in YAML_SUFFIXES else "ini"
    return said(by_plugin.get(wanted, failures[-1][1]))


def _line_of(error: BaseException) -> int | None:
    """The line Ansible blames, from the error or its causes: 2.19 tags them with an Origin
    (`line_num`), older versions with a YAML object's `ansible_pos` (path, line, column)."""
    seen = 0
    while error is not None and seen < 10:
        obj = getattr(error, "obj", None)
        line = getattr(obj, "line_num", None)
        if line is None:
            pos = getattr(obj, "ansible_pos", None)
            line = pos[1] if isinstance(pos, tuple) and len(pos) > 1 else None
        if isinstance(line, int) and line > 0:
            return line
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _one_line(error: BaseException, limit: int = 300) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _host(ansible: dict, loader, host, hostvars: dict) -> InventoryHost:
    name = str(host.name)
    field = _Fields(ansible, loader, name, hostvars)

    connection = field.text("ansible_connection")
    if connection is not None and connection not in SSH_CONNECTIONS:
        raise EdgekitError(f"host {name} has ansible_connection={connection}, and edgekit reaches devices "
                           "over SSH only",
                           f"leave it out with --limit 'all:!{name}', or set ansible_connection=ssh for it")

    address = field.text(*HOST_VARS) or name
    if address.startswith("-") or any(c.isspace() for c in address):
        raise EdgekitError(f"host {name}: {address!r} is not a host name or address",
                           f"set ansible_host for {name} to the device's name or address")
    user = field.text(*USER_VARS) or None  # an empty one is no user, as for Ansible
    if user is not None and (user.startswith("-") or any(c.isspace() for c in user)):
        raise EdgekitError(f"host {name}: {field.last_set(*USER_VARS)} {user!r} is not a user name",
                           f"set ansible_user for {name} to the login on the device")
    destination = f"{user}@{address}" if user else address

    options: list[str] = []
    port = field.value(*PORT_VARS)
    if port is not None:
        options.append(f"Port={_port(name, field.last_set(*PORT_VARS), port)}")
    key = field.text(*KEY_VARS)
    if key:
        options.append(f"IdentityFile={os.path.expanduser(key)}")
    for var in ARGS_VARS:
        args = field.text(var)
        if args:
            options += _ssh_args(name, var, args)

    python = field.text(PYTHON_VAR)
    if python is not None and (not python.strip() or python.strip() in AUTO_PYTHON):
        python = None

    groups = tuple(sorted({str(g.name) for g in host.get_groups()} - {"all", "ungrouped"}))
    return InventoryHost(name=name, destination=destination, ssh_options=tuple(options), python=python,
                         groups=groups)


class _Fields:
    """One host's connection variables, templates rendered by Ansible's Templar."""

    def __init__(self, ansible: dict, loader, name: str, hostvars: dict):
        self.ansible = ansible
        self.loader = loader
        self.name = name
        self.vars = hostvars
        self._templar = None

    def last_set(self, *names: str) -> str | None:
        """Of `names` (in the ssh plugin's order), the one Ansible uses: the last one set."""
        chosen = None
        for var in names:
            if self.vars.get(var) is not None:
                chosen = var
        return chosen

    def value(self, *names: str):
        var = self.last_set(*names)
        if var is None:
            return None
        value = self.vars[var]
        kind = type(value).__name__.lower()  # 2.19: EncryptedString; older: AnsibleVaultEncryptedUnicode
        if "vault" in kind or "encrypted" in kind:
            raise EdgekitError(f"host {self.name}: {var} is vault-encrypted, and edgekit reads inventories "
                               "without vault secrets", f"set {var} for {self.name} to a plain value")
        if isinstance(value, str) and any(mark in value for mark in _TEMPLATE_MARKS):
            value = self._render(var, value)
        return _plain(value)

    def text(self, *names: str) -> str | None:
        value = self.value(*names)
        if value is None:
            return None
        var = self.last_set(*names)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise EdgekitError(f"host {self.name}: {var} is {shown}, not a string",
                               f"set {var} for {self.name} to a plain value")
        return str(value)

    def _render(self, var: str, template: str):
        unsupported = (f"templated values are not supported for {var} of host {self.name} unless Ansible can "
                       f"render them from the inventory alone ({template!r}")
        fix = f"set {var} for {self.name} to a plain value"
        problem = _lookup_in(template)
        if problem:
            raise EdgekitError(f"{unsupported}: {problem})", fix)
        if self._templar is None:
            self._templar = self.ansible["Templar"](loader=self.loader, variables=self.vars)
        try:
            rendered = self._templar.template(template)
        except Exception as e:  # undefined variables, syntax errors, filters failing
            raise EdgekitError(f"{unsupported}: {_one_line(e, 200)})", fix) from None
        if isinstance(rendered, str) and any(mark in rendered for mark in _TEMPLATE_MARKS):
            raise EdgekitError(f"{unsupported}: Ansible left it unrendered)", fix)
        return rendered


def _lookup_in(template: str) -> str | None:
    """Why `template` is not a plain variable template: it calls a lookup (which would run
    something or read something), or it is not valid Jinja."""
    import jinja2
    from jinja2 import nodes

    try:
        tree = jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as e:
        return f"not valid Jinja: {e.message}"
    for call in tree.find_all(nodes.Call):
        name = call.node.name if isinstance(call.node, nodes.Name) else None
        # a lookup runs or reads something; any other call (a method of a value, a global) may
        # reach Python itself: neither has a place in a host's address, user or port
        return f"it calls {name}()" if name else "it calls a function"
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        key = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(key, str) and key.startswith("_"):
            return f"it reaches the attribute {key}"
    return None


def _plain(value):
    """Ansible 2.19 hands back tagged str/int subclasses; edgekit wants the plain types."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def _port(name: str, var: str | None, value) -> int:
    text = str(value).strip() if not isinstance(value, bool) else ""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EdgekitError(f"host {name}: {var} is {value!r}, not a port number",
                           f"set {var} for {name} to a number from 1 to 65535")
    return int(text)


def _ssh_args(name: str, var: str, args: str) -> list[str]:
    """The `ssh -o` options that `args` (ansible_ssh_common_args/extra_args) gives."""
    fix = ("edgekit passes on only -o KEY=VALUE, -i FILE and -p PORT from it: "
           "put other ssh settings in ~/.ssh/config")
    try:
        argv = shlex.split(args)
    except ValueError as e:
        raise EdgekitError(f"host {name}: {var} cannot be split into ssh arguments ({e})", fix) from None
    options = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-o", "-i", "-p"):
            if i + 1 == len(argv):
                raise EdgekitError(f"host {name}: {var} ends with {arg} and no value after it", fix)
            flag, value = arg, argv[i + 1]
            i += 2
        elif arg[:2] in ("-o", "-i", "-p") and len(arg) > 2:
            flag, value = arg[:2], arg[2:]
            i += 1
        else:
            raise EdgekitError(f"host {name}: {var} has the ssh argument {arg!r}, which edgekit cannot pass on", fix)
        if flag == "-o":
            match = _OPTION.match(value)
            if not match:
                raise EdgekitError(f"host {name}: {var} has '-o {value}', which is not -o KEY=VALUE", fix)
            options.append(f"{match.group(1)}={match.group(2).strip()}")
        elif flag == "-i":
            options.append(f"IdentityFile={os.path.expanduser(value)}")
        else:
            options.append(f"Port={_port(name, var, value)}")
    return options
