"""edgekit.device.inventory: Ansible inventories (YAML and INI) read by ansible-core itself.

Every inventory here is a real file written into tmp_path; nothing is mocked but the absence of
ansible-core in one test."""

from __future__ import annotations

import importlib.util  # noqa: E402  (ansible is never imported here: it patches process-wide state)
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

if importlib.util.find_spec("ansible") is None:
    pytest.skip("ansible-core is not installed (the fleet extra: pip install 'edgekit[fleet]')",
                allow_module_level=True)

from edgekit.device.inventory import InventoryHost, read_inventory  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The same fleet twice. Host order in the file is not alphabetical, and not Ansible's own group
# walk order either (that one would put orin-2 and mac-1 of the shallow group `lab` before pi-b).
# orin-2 is in jetsons (depth 2: devices > jetsons) and lab (depth 1): the deeper group's
# ansible_user wins, lab's ansible_port applies since jetsons sets none.
YAML_FLEET = """\
all:
  vars:
    ansible_user: root
    ansible_python_interpreter: /usr/bin/python3
  hosts:
    zeta-bastion:
      ansible_host: 192.0.2.1
  children:
    devices:
      vars:
        ansible_ssh_private_key_file: ~/.ssh/edge_key
      children:
        pis:
          vars:
            ansible_user: pi
            ansible_port: 2222
          hosts:
            pi-b:
              ansible_host: 10.0.0.12
              ansible_port: 2200
            pi-a:
              ansible_host: 10.0.0.11
        jetsons:
          vars:
            ansible_user: nvidia
            ansible_python_interpreter: /opt/edge/bin/python
          hosts:
            orin-1:
              ansible_host: "{{ inventory_hostname }}.lab"
              ansible_ssh_common_args: "-o ProxyJump=zeta-bastion -o 'ServerAliveCountMax 5'"
            orin-2:
              ansible_host: 10.0.1.2
    lab:
      vars:
        ansible_user: labuser
        ansible_port: 2022
      hosts:
        orin-2:
        mac-1:
          ansible_host: 10.0.2.1
          ansible_ssh_extra_args: -i ~/.ssh/mac -oCompression=yes
"""

INI_FLEET = """\
zeta-bastion ansible_host=192.0.2.1

[all:vars]
ansible_user=root
ansible_python_interpreter=/usr/bin/python3

[devices:children]
pis
jetsons

[devices:vars]
ansible_ssh_private_key_file=~/.ssh/edge_key

[pis]
pi-b ansible_host=10.0.0.12 ansible_port=2200
pi-a ansible_host=10.0.0.11

[pis:vars]
ansible_user=pi
ansible_port=2222

[jetsons]
orin-1 ansible_host="{{ inventory_hostname }}.lab" ansible_ssh_common_args="-o ProxyJump=zeta-bastion -o 'ServerAliveCountMax 5'"
orin-2 ansible_host=10.0.1.2

[jetsons:vars]
ansible_user=nvidia
ansible_python_interpreter=/opt/edge/bin/python

[lab]
orin-2
mac-1 ansible_host=10.0.2.1 ansible_ssh_extra_args="-i ~/.ssh/mac -oCompression=yes"

[lab:vars]
ansible_user=labuser
ansible_port=2022
"""

ORDER = ["zeta-bastion", "pi-b", "pi-a", "orin-1", "orin-2", "mac-1"]


def _expected(home: str) -> list[InventoryHost]:
    key = f"IdentityFile={home}/.ssh/edge_key"
    return [
        InventoryHost("zeta-bastion", "root@192.0.2.1", (), "/usr/bin/python3", ()),
        InventoryHost("pi-b", "pi@10.0.0.12", ("Port=2200", key), "/usr/bin/python3", ("devices", "pis")),
        InventoryHost("pi-a", "pi@10.0.0.11", ("Port=2222", key), "/usr/bin/python3", ("devices", "pis")),
        InventoryHost("orin-1", "nvidia@orin-1.lab", (key, "ProxyJump=zeta-bastion", "ServerAliveCountMax=5"),
                      "/opt/edge/bin/python", ("devices", "jetsons")),
        InventoryHost("orin-2", "nvidia@10.0.1.2", ("Port=2022", key), "/opt/edge/bin/python",
                      ("devices", "jetsons", "lab")),
        InventoryHost("mac-1", "labuser@10.0.2.1", ("Port=2022", f"IdentityFile={home}/.ssh/mac", "Compression=yes"),
                      "/usr/bin/python3", ("lab",)),
    ]


@pytest.fixture
def home(tmp_path, monkeypatch) -> str:
    folder = tmp_path / "home"
    folder.mkdir()
    monkeypatch.setenv("HOME", str(folder))
    return str(folder)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(params=["yaml", "ini"])
def fleet(request, tmp_path) -> Path:
    if request.param == "yaml":
        return _write(tmp_path / "yaml", "fleet.yml", YAML_FLEET)
    return _write(tmp_path / "ini", "fleet.ini", INI_FLEET)


def _error(path, limit=None) -> EdgekitError:
    with pytest.raises(EdgekitError) as info:
        read_inventory(path, limit)
    error = info.value
    assert error.fix, f"no fix in: {error}"
    assert "\n" not in str(error)
    assert ";" not in error.fix  # the CLI prints `error: <problem>; <fix>`
    return error


# --- what the hosts are -------------------------------------------------------------------------

def test_yaml_and_ini_give_the_same_hosts(tmp_path, home):
    yaml_hosts = read_inventory(_write(tmp_path, "fleet.yml", YAML_FLEET))
    ini_hosts = read_inventory(_write(tmp_path, "fleet.ini", INI_FLEET))
    assert yaml_hosts == ini_hosts == _expected(home)


def test_hosts_come_in_file_order_each_once(fleet, home):
    names = [h.name for h in read_inventory(fleet)]
    assert names == ORDER  # orin-2 is listed twice (jetsons, lab) and comes once, where it first appears


def test_accepts_a_str_path(fleet, home):
    assert read_inventory(str(fleet)) == _expected(home)


@pytest.mark.parametrize("limit, names", [
    ("pis", ["pi-b", "pi-a"]),                               # a group
    ("jetsons", ["orin-1", "orin-2"]),                       # a child group of devices
    ("devices", ["pi-b", "pi-a", "orin-1", "orin-2"]),       # a parent: its children's hosts
    ("orin-1", ["orin-1"]),                                  # a host
    ("devices:!pis", ["orin-1", "orin-2"]),                  # an exclusion
    ("all:!zeta-bastion", ["pi-b", "pi-a", "orin-1", "orin-2", "mac-1"]),
    ("jetsons:pis", ["pi-b", "pi-a", "orin-1", "orin-2"]),   # a union, in file order, not the pattern's
    ("lab:jetsons", ["orin-1", "orin-2", "mac-1"]),          # orin-2 is in both: once
    ("lab:&devices", ["orin-2"]),                            # an intersection
    ("pi-*", ["pi-b", "pi-a"]),                              # a wildcard
    ("~orin-[0-9]", ["orin-1", "orin-2"]),                   # a regex
    ("", ORDER),                                             # no limit
])
def test_limit_is_an_ansible_host_pattern(fleet, home, limit, names):
    assert [h.name for h in read_inventory(fleet, limit)] == names


def test_limited_hosts_keep_their_variables(fleet, home):
    (orin2,) = read_inventory(fleet, "orin-2")
    assert orin2 == _expected(home)[4]


def test_group_vars_and_host_vars_folders_beside_the_file(tmp_path, home):
    inventory = _write(tmp_path, "hosts.ini", """\
        [pis]
        pi-a
        pi-b ansible_user=root

        [pis:vars]
        ansible_port=2200
        """)
    _write(tmp_path, "group_vars/pis.yml", "ansible_user: pi\nansible_port: 2222\n")
    _write(tmp_path, "group_vars/all.yml", "ansible_python_interpreter: /usr/bin/python3\n")
    _write(tmp_path, "host_vars/pi-a.yml", "ansible_host: 10.0.0.11\n")
    # Ansible: group_vars files beat the inventory file's group vars; inventory host vars beat both
    assert read_inventory(inventory) == [
        InventoryHost("pi-a", "pi@10.0.0.11", ("Port=2222",), "/usr/bin/python3", ("pis",)),
        InventoryHost("pi-b", "root@pi-b", ("Port=2222",), "/usr/bin/python3", ("pis",)),
    ]


def test_group_vars_in_the_current_folder_are_not_read(tmp_path, home, monkeypatch):
    inventory = _write(tmp_path / "inv", "hosts.yml", "all:\n  hosts:\n    pi-a:\n")
    _write(tmp_path / "cwd", "group_vars/all.yml", "ansible_user: nobody\n")
    monkeypatch.chdir(tmp_path / "cwd")
    assert read_inventory(inventory)[0].destination == "pi-a"


def test_older_ssh_aliases(tmp_path, home):
    inventory = _write(tmp_path, "old.ini", """\
        old ansible_ssh_host=10.0.0.9 ansible_ssh_user=admin ansible_ssh_port=2201 ansible_ssh_private_key_file=/keys/old
        plain
        """)
    assert read_inventory(inventory) == [
        InventoryHost("old", "admin@10.0.0.9", ("Port=2201", "IdentityFile=/keys/old"), None, ()),
        InventoryHost("plain", "plain", (), None, ()),
    ]


def test_a_name_and_its_alias_both_set_resolve_as_ansibles_ssh_plugin_does(tmp_path, home):
    """Where ansible_host and ansible_ssh_host (and so on) are both set, the value is the one that
    Ansible's own ssh connection plugin resolves from the same variables."""
    from edgekit.device.inventory import HOST_VARS, KEY_VARS, PORT_VARS, USER_VARS

    inventory = _write(tmp_path, "both.yml", """\
        all:
          vars:
            ansible_ssh_user: old-user
            ansible_port: 2201
          hosts:
            both:
              ansible_host: new.example
              ansible_ssh_host: old.example
              ansible_user: new-user
              ansible_ssh_port: 2202
              ansible_private_key_file: /keys/new
              ansible_ssh_private_key_file: /keys/old
        """)
    (host,) = read_inventory(inventory)

    variables = {"inventory_hostname": "both", "ansible_host": "new.example", "ansible_ssh_host": "old.example",
                 "ansible_user": "new-user", "ansible_ssh_user": "old-user", "ansible_port": 2201,
                 "ansible_ssh_port": 2202, "ansible_private_key_file": "/keys/new",
                 "ansible_ssh_private_key_file": "/keys/old"}
    options = {"host": HOST_VARS, "remote_user": USER_VARS, "port": PORT_VARS, "private_key_file": KEY_VARS}
    code = """
import json, sys
from ansible import constants as C
from ansible.plugins.loader import connection_loader
options, variables = json.loads(sys.argv[1]), json.loads(sys.argv[2])
connection_loader.get("ssh", class_only=True)  # loads the plugin's option definitions
definitions = C.config.get_configuration_definitions("connection", "ssh")
print(json.dumps({o: [[v["name"] for v in definitions[o]["vars"] if v["name"] in names],
                      C.config.get_config_value(o, plugin_type="connection", plugin_name="ssh", variables=variables)]
                  for o, names in options.items()}))
"""  # in a child: ansible-core is never imported into the test process (see edgekit.device.inventory)
    run = subprocess.run([sys.executable, "-c", code, json.dumps(options), json.dumps(variables)],
                         capture_output=True, text=True, check=True)
    resolved = json.loads(run.stdout.strip().splitlines()[-1])
    for option, names in options.items():
        assert resolved[option][0] == list(names), option

    def ansible(option):
        return resolved[option][1]

    assert host.destination == f"{ansible('remote_user')}@{ansible('host')}" == "old-user@old.example"
    assert host.ssh_options == (f"Port={ansible('port')}", f"IdentityFile={ansible('private_key_file')}") \
        == ("Port=2202", "IdentityFile=/keys/old")


def test_templates_ansible_can_render_from_the_inventory(tmp_path, home):
    inventory = _write(tmp_path, "t.yml", """\
        all:
          vars:
            site: lab
            base_port: 2200
          hosts:
            pi-a:
              ansible_host: "{{ inventory_hostname }}.{{ site }}.example"
              ansible_user: "{{ 'pi' | upper }}"
              ansible_port: "{{ base_port + 1 }}"
              ansible_ssh_private_key_file: "{{ inventory_dir }}/keys/{{ inventory_hostname }}"
              ansible_python_interpreter: "/opt/{{ site }}/bin/python"
        """)
    assert read_inventory(inventory) == [
        InventoryHost("pi-a", "PI@pi-a.lab.example", ("Port=2201", f"IdentityFile={tmp_path}/keys/pi-a"),
                      "/opt/lab/bin/python", ())]


def test_python_auto_modes_are_no_interpreter(tmp_path, home):
    inventory = _write(tmp_path, "p.ini", "a ansible_python_interpreter=auto_silent\n"
                                          "b ansible_python_interpreter=/usr/bin/python3.12\n")
    assert [h.python for h in read_inventory(inventory)] == [None, "/usr/bin/python3.12"]


@pytest.mark.parametrize("name, text", [
    ("r.ini", "[pis]\npi-[1:3] ansible_user=pi\n"),
    ("r.yml", "all:\n  children:\n    pis:\n      hosts:\n        pi-[1:3]:\n          ansible_user: pi\n"),
])
def test_host_ranges(tmp_path, home, name, text):
    assert [(h.name, h.destination) for h in read_inventory(_write(tmp_path, name, text))] == [
        ("pi-1", "pi@pi-1"), ("pi-2", "pi@pi-2"), ("pi-3", "pi@pi-3")]


def test_ini_host_port_suffix(tmp_path, home):
    inventory = _write(tmp_path, "port.ini", "[pis]\npi-a:2222 ansible_host=10.0.0.1\n")
    assert read_inventory(inventory) == [InventoryHost("pi-a", "10.0.0.1", ("Port=2222",), None, ("pis",))]


@pytest.mark.parametrize("args, options", [
    ("-o ProxyJump=bastion", ("ProxyJump=bastion",)),
    ("-oUserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
     ("UserKnownHostsFile=/dev/null", "StrictHostKeyChecking=no")),
    ("-o 'ProxyCommand=ssh -W %h:%p bastion'", ("ProxyCommand=ssh -W %h:%p bastion",)),
    ("-i ~/.ssh/k -p 2200 -i/k2 -p2201", ("IdentityFile={home}/.ssh/k", "Port=2200", "IdentityFile=/k2", "Port=2201")),
    ("", ()),
])
def test_ssh_args_to_options(tmp_path, home, args, options):
    inventory = _write(tmp_path, "a.yml", f"all:\n  hosts:\n    h:\n"
                                          f"      ansible_ssh_common_args: {json.dumps(args)}\n")
    assert read_inventory(inventory)[0].ssh_options == tuple(o.format(home=home) for o in options)


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, bad", [
    ("-F /etc/ssh/other_config", "-F"),
    ("-o ProxyJump=b -A", "-A"),
    ("-o Compression", "Compression"),
    ("-o", "-o"),
    ("-p notaport", "notaport"),
    ("-o 'unclosed", "split"),
])
def test_unsupported_ssh_args(tmp_path, home, args, bad):
    inventory = _write(tmp_path, "a.yml", f"all:\n  hosts:\n    orin-9:\n"
                                          f"      ansible_ssh_extra_args: {json.dumps(args)}\n")
    error = _error(inventory)
    assert "orin-9" in error.problem and bad in error.problem and "ansible_ssh_extra_args" in error.problem


def test_missing_file(tmp_path):
    error = _error(tmp_path / "nope.yml")
    assert "nope.yml" in error.problem and "does not exist" in error.problem


def test_a_directory_is_refused(tmp_path):
    assert "directory" in _error(tmp_path).problem


@pytest.mark.parametrize("name, text, reason", [
    ("broken.yml", "all:\n  hosts:\n    a: [\n", "YAML"),
    ("broken.yaml", "all:\n  hosts: [a, b]\n", "hosts"),
    ("broken.ini", "[pis\npi-a\n", "parse"),
    ("broken.ini", "pi-a ansible_port=22 stray\n", "stray"),
    ("fleet.ini", "all:\n  hosts:\n    a:\n", "all:"),        # YAML in a .ini file: Ansible reads it as INI only
    ("hosts", "[pis\npi-a\n", "as YAML: "),                    # no suffix: tried as YAML, then INI
])
def test_a_file_ansible_cannot_parse_is_an_error_not_an_empty_fleet(tmp_path, capfd, name, text, reason):
    path = _write(tmp_path, name, text)
    error = _error(path)
    assert "cannot parse" in error.problem and str(path) in error.problem and reason in error.problem
    assert "ansible-inventory" in error.fix
    assert capfd.readouterr() == ("", "")  # Ansible's "[WARNING]: Unable to parse ..." stays inside


@pytest.mark.parametrize("text", [YAML_FLEET, INI_FLEET])
def test_a_file_without_suffix_is_yaml_or_ini(tmp_path, home, text):
    assert read_inventory(_write(tmp_path, "hosts", text)) == _expected(home)


def test_a_yaml_error_names_the_line(tmp_path):
    path = _write(tmp_path, "broken.yml", "all:\n  hosts:\n    a:\n      b: [\n")
    assert "(line 5)" in _error(path).problem


@pytest.mark.parametrize("name, text", [
    ("empty.yml", ""),
    ("comment.ini", "# no hosts yet\n"),
    ("groups.ini", "[pis]\n[pis:vars]\nansible_user=pi\n"),
    ("groups.yml", "all:\n  children:\n    pis:\n      vars:\n        ansible_user: pi\n"),
])
def test_an_inventory_without_hosts(tmp_path, name, text):
    error = _error(_write(tmp_path, name, text))
    assert "no hosts" in error.problem


@pytest.mark.parametrize("limit", ["nosuchgroup", "pis:&lab", "localhost", "all:!all"])
def test_a_limit_that_matches_nothing_names_the_groups(fleet, capfd, limit):
    error = _error(fleet, limit)
    assert repr(limit) in error.problem and "matches no host" in error.problem
    assert "devices, jetsons, lab, pis" in error.fix
    assert capfd.readouterr() == ("", "")  # Ansible's "Could not match supplied host pattern" too


def test_a_limit_file_that_does_not_exist(fleet, tmp_path):
    error = _error(fleet, f"@{tmp_path}/missing-limit-file")
    assert "--limit" in error.problem


@pytest.mark.parametrize("value, why", [
    ("{{ ansible_default_ipv4.address }}", "ansible_default_ipv4"),     # a fact: not in the inventory
    ("{{ hostvars['other'].ansible_host }}", "hostvars"),               # another host's vars
    ("{{ lookup('pipe', 'hostname') }}", "lookup"),                     # runs something
    ("{{ query('env', 'HOME') }}", "query"),
    ("{{ unclosed", "Jinja"),
])
def test_templates_ansible_cannot_render_from_the_inventory(tmp_path, home, value, why):
    inventory = _write(tmp_path, "t.yml", f"all:\n  hosts:\n    pi-a:\n      ansible_host: {json.dumps(value)}\n")
    error = _error(inventory)
    assert "templated values are not supported for ansible_host of host pi-a" in error.problem
    assert why in error.problem and "plain value" in error.fix


VAULTED = """!vault |
          $ANSIBLE_VAULT;1.1;AES256
          62313365396662343061393464336163383764373764613633653634306231386433626436623361
          6134333665353966363534333632666535333761666131620a663537646436643839616531643561
          3438626666666137650a353638643435666633633964366338633066623234616432373231333331
          6564"""


def test_vaulted_values_elsewhere_do_not_matter_but_a_vaulted_field_is_an_error(tmp_path, home):
    inventory = _write(tmp_path, "v.yml", f"""\
all:
  hosts:
    pi-a:
      ansible_host: 10.0.0.1
      ansible_become_password: {VAULTED}
    pi-b:
      ansible_user: {VAULTED}
""")
    assert read_inventory(inventory, "pi-a") == [InventoryHost("pi-a", "10.0.0.1", (), None, ())]
    error = _error(inventory, "pi-b")
    assert "pi-b" in error.problem and "ansible_user" in error.problem and "vault" in error.problem
    assert "$ANSIBLE_VAULT" not in str(error)
    port = _write(tmp_path, "vp.yml", f"all:\n  hosts:\n    pi-c:\n      ansible_port: {VAULTED}\n")
    assert "vault-encrypted" in _error(port).problem


def test_a_port_that_is_not_a_number(tmp_path, home):
    error = _error(_write(tmp_path, "p.ini", "pi-a ansible_port=ssh\n"))
    assert "pi-a" in error.problem and "ansible_port" in error.problem and "not a port" in error.problem


def test_a_host_ansible_reaches_without_ssh(tmp_path, home):
    inventory = _write(tmp_path, "l.ini", "pi-a\nlocalhost ansible_connection=local\n")
    error = _error(inventory)
    assert "localhost" in error.problem and "ansible_connection=local" in error.problem
    assert "all:!localhost" in error.fix
    assert [h.name for h in read_inventory(inventory, "all:!localhost")] == ["pi-a"]  # the fix works


def test_ansible_core_missing(tmp_path, monkeypatch):
    inventory = _write(tmp_path, "a.yml", "all:\n  hosts:\n    a:\n")
    for name in [m for m in sys.modules if m == "ansible" or m.startswith("ansible.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "ansible", None)
    error = _error(inventory)
    assert "ansible-core" in error.problem and "not installed" in error.problem
    assert error.fix == "install the fleet extra: pip install 'edgekit[fleet]'"


# --- side effects -------------------------------------------------------------------------------

def test_reading_prints_nothing(fleet, home, capfd):
    read_inventory(fleet, "devices:!pis")
    assert capfd.readouterr() == ("", "")


def test_importing_the_module_does_not_import_ansible():
    code = ("import sys, edgekit.device.inventory; "
            "print(sorted(m for m in sys.modules if m == 'ansible' or m.startswith('ansible.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


FRESH = """\
import json, os, sys
from pathlib import Path
from edgekit.errors import EdgekitError
from edgekit.device.inventory import read_inventory
hosts = read_inventory(Path(sys.argv[1]), "pis")
try:
    read_inventory(Path(sys.argv[2]))
    broken = None
except EdgekitError as e:
    broken = str(e)
print(json.dumps({"hosts": [h.destination for h in hosts], "broken": broken,
                  "local_temp_left_set": "ANSIBLE_LOCAL_TEMP" in os.environ}))
"""


@pytest.mark.parametrize("unparsed_is_failed", [False, True])
def test_a_fresh_process_with_an_unwritable_home(tmp_path, unparsed_is_failed):
    """The first read imports ansible-core: that import prints nothing, needs no writable HOME
    (Ansible wants ~/.ansible/tmp), writes nothing into the current folder, leaves no temp folder
    behind and leaves the environment as it was. An ansible.cfg-style setting that makes Ansible
    raise on an unparsable file (instead of warning) gives the same error."""
    inventory = _write(tmp_path / "inv", "fleet.yml", YAML_FLEET)
    broken = _write(tmp_path / "inv", "broken.ini", "pi-a ansible_port=22 stray\n")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(HOME=str(not_a_folder / "home"), TMPDIR=str(tmp), PYTHONPATH=str(ROOT))
    if unparsed_is_failed:
        env.update(ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="true", ANSIBLE_INVENTORY_UNPARSED_FAILED="true")
    run = subprocess.run([sys.executable, "-c", FRESH, str(inventory), str(broken)], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    result = json.loads(run.stdout)  # the one line the script prints, nothing of Ansible's around it
    assert result["hosts"] == ["pi@10.0.0.12", "pi@10.0.0.11"]
    assert result["broken"].startswith(f"Ansible cannot parse the inventory {broken}: ")
    assert "got: stray" in result["broken"]  # the ini plugin's reason, not Ansible's "Completely failed to parse"
    assert result["local_temp_left_set"] is False
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []


SSTI = ["{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() or '127.0.0.1' }}",
        "{{ '127.0.0.1' if (self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') or 1) }}",
        "{% set x = lookup('pipe', 'touch {marker}') %}127.0.0.1",
        "{{ ''.join(['127.0.0.1']) }}",
        "{{ namespace()['__init__'] }}"]


@pytest.mark.parametrize("template", SSTI)
def test_a_templated_host_var_that_would_run_code_is_refused_and_runs_nothing(tmp_path, template):
    """Reading an inventory must never run a command: a template that calls anything or reaches a
    dunder attribute (Jinja's way to Python itself) is one line naming the host and the var, for a
    host var and a group var alike, and nothing it asked for ran."""
    marker = tmp_path / "ran"
    value = template.replace("{marker}", str(marker))
    for where in ("host", "group"):
        inventory = tmp_path / f"{where}.yml"
        inventory.write_text(json.dumps({"all": {"children": {"pis": {
            "hosts": {"pi1": {"ansible_host": value} if where == "host" else {}},
            "vars": {"ansible_host": value} if where == "group" else {}}}}}))
        with pytest.raises(EdgekitError) as e:
            read_inventory(inventory)
        assert "ansible_host" in e.value.problem and "pi1" in e.value.problem and "\n" not in str(e.value)
        assert not marker.exists()


def test_a_script_or_a_pipe_as_inventory_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "dynamic.py"
    script.write_text(f"#!/bin/sh\ntouch {marker}\necho '{{}}'\n")
    script.chmod(0o755)
    with pytest.raises(EdgekitError) as e:
        read_inventory(script)
    assert "never runs one" in e.value.problem and "ansible-inventory" in e.value.fix and not marker.exists()
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(EdgekitError, match="not a regular file"):
        read_inventory(fifo)  # refused at once: a pipe is never opened (it would block)
