"""The SLURM staging folder, attacked by another user of the node (issue 13, finding 1).

The node is simulated, no SLURM needed: the rendered sbatch script runs under bash
with a fake ``srun`` (runs the node's function here) and a fake ``apptainer`` on
PATH. The fake apptainer records the sha256 of the image file it was handed, then
"runs the image": each image here is a small shell script, so running the wrong
one does what an attacker's image would do. The other user is real: ``nobody``,
through ``setpriv``. It pre-creates the folder the old script staged to, with mode
777, and swaps any file of someone else in any folder it can write, while a slow
disk (``cp``, ``tee`` and ``sha256sum`` that pause after their work) leaves it time.

Against the old script the job ran nobody's image, as the job's user, with the
broker URL and the signing key in its environment, and that image wrote them to a
world-readable file. Here: only our image runs, a folder the job's user does not
own is refused with a message that says what to do, and no secret is left where
nobody can read it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sif_magic.launch import slurm as sl

NOBODY = 65534
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def as_nobody() -> list[str]:
    """The argv prefix that runs a command as the second local user, ``nobody``."""
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if os.geteuid() == 0:
        return setpriv
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"]).returncode == 0:
        return ["sudo", "-n", *setpriv]
    msg = "needs root (or sudo without a password) to act as a second user through setpriv"
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder like the node's /tmp (root, mode 1777), of this test only."""
    path = Path(tempfile.mkdtemp(prefix="sif-stage-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def node(tmp_path: Path, sif_home: Path) -> dict:
    """Our image, our secrets (mode 600) and the fake tools of the node."""
    url = f"amqp://guest:{secrets.token_hex(12)}@127.0.0.1:5672/%2F"
    key = secrets.token_hex(32)
    files = {}
    for name, text in (("url", url), ("key", key)):
        files[name] = tmp_path / name
        fd = os.open(files[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, text.encode() + b"\n")
        os.close(fd)
    image = tmp_path / "ml.sif"
    image.write_text(f'#!/bin/sh\n# our image {secrets.token_hex(8)}\necho ours >> "$REC.ran"\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        '#!/bin/bash\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n'
    )
    (bin_dir / "apptainer").write_text(
        "#!/bin/bash\n"
        'for a in "$@"; do image="$a"; done\n'
        '/usr/bin/sha256sum "$image" | cut -d" " -f1 >> "$REC.hashes"\n'
        'umask > "$REC.umask"\n'
        'exec sh "$image"  # "runs the image", with the environment the job gave it\n'
    )
    for tool in ("cp", "tee", "sha256sum"):  # a slow node-local disk
        real = shutil.which(tool, path="/usr/bin:/bin")
        (bin_dir / tool).write_text(f'#!/bin/sh\n{real} "$@"; rc=$?; sleep 1; exit $rc\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {
        "url": url,
        "password": url.split(":")[2].split("@")[0],
        "key": key,
        "files": files,
        "image": image,
        "bin": bin_dir,
        "rec": tmp_path / "rec",
    }


def script_for(node: dict, stage_dir: Path) -> str:
    spec = sl.SlurmSpec(
        runtime="ml.sif",
        image=str(node["image"]),
        container="apptainer",
        stage_dir=str(stage_dir),
        amqp_url_file=str(node["files"]["url"]),
        key_file=str(node["files"]["key"]),
    )
    return sl.render_script(spec)


def run_job(node: dict, script: str, env: dict[str, str] | None = None):
    path = node["rec"].with_name("job.sbatch")
    path.write_text(script)
    base = {
        "PATH": f"{node['bin']}:/usr/bin:/bin",
        "HOME": str(path.parent),
        "REC": str(node["rec"]),
        "SLURM_JOB_ID": "77",
        "SLURM_JOB_NUM_NODES": "1",
    }
    return subprocess.run(
        ["bash", str(path)],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


ATTACKER = r"""
# nobody's side: the folder the old script staged to, mode 777, and a loop that swaps
# every file of someone else, in any folder it can write, for its own "image".
base="$1"; evil="$base/evil.sif"; log="$base/attacker.log"
cat > "$evil" <<EOF
#!/bin/sh
# nobody's image: it runs as the job's user, with the job's environment
env > "$base/loot.\$\$"; chmod 644 "$base/loot.\$\$"
echo theirs >> "\$REC.ran"
EOF
chmod 755 "$evil"
mkdir -m 777 "$base/sif_magic-$2-77"
touch "$base/attacker.ready"
while :; do
    find "$base" -mindepth 1 -type d -writable 2>/dev/null | while read -r d; do
        for f in "$d"/*; do
            [ -f "$f" ] && [ ! -O "$f" ] || continue
            cp "$evil" "$d/.swap" && mv -f "$d/.swap" "$f" && echo "swapped $f" >> "$log"
        done
    done
    sleep 0.02
done
"""


def readable_by_nobody(folder: Path, *needles: str) -> list[str]:
    """Files under ``folder`` that nobody can read and that hold one of ``needles``."""
    argv = ["grep", "-rIl", *(a for n in needles for a in ("-e", n)), str(folder)]
    res = subprocess.run([*as_nobody(), *argv], capture_output=True, text=True)
    return res.stdout.split()


def user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def test_another_user_cannot_swap_the_staged_image(node: dict, shared: Path) -> None:
    attacker = subprocess.Popen(
        [*as_nobody(), "bash", "-c", ATTACKER, "attacker", str(shared), user()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (shared / "attacker.ready").exists():
            assert attacker.poll() is None and time.monotonic() < deadline, "no attacker"
            time.sleep(0.05)
        res = run_job(node, script_for(node, shared))
    finally:
        attacker.kill()
        attacker.wait()
    ours = hashlib.sha256(node["image"].read_bytes()).hexdigest()
    ran = Path(f"{node['rec']}.hashes").read_text().split() if res.returncode == 0 else []
    assert res.returncode == 0, res.stderr
    assert ran == [ours], "the job ran an image that is not ours"
    assert Path(f"{node['rec']}.ran").read_text() == "ours\n"
    umask = os.umask(0o022)
    os.umask(umask)  # the worker's files are made as the user's own umask says
    assert Path(f"{node['rec']}.umask").read_text().strip() == f"{umask:04o}"
    # nothing the job wrote, and no secret, where nobody can read it
    assert not list(shared.glob("loot.*"))
    assert readable_by_nobody(shared, node["password"], node["key"]) == []
    # the job staged in a folder of its own, removed when it ended; nobody's is untouched
    assert sorted(p.name for p in shared.iterdir() if p.is_dir()) == [f"sif_magic-{user()}-77"]
    assert list((shared / f"sif_magic-{user()}-77").iterdir()) == []


@pytest.mark.parametrize("via", ["SIF_MAGIC_STAGE_DIR", "SLURM_TMPDIR"])
def test_a_staging_folder_of_another_user_is_refused(node: dict, shared: Path, via: str) -> None:
    theirs = shared / "stage"  # made by nobody, mode 777: "a shared folder, use it"
    subprocess.run([*as_nobody(), "mkdir", "-m", "777", str(theirs)], check=True)
    if via == "SLURM_TMPDIR":
        res = run_job(node, script_for(node, shared), {"SLURM_TMPDIR": str(theirs)})
    else:
        res = run_job(node, script_for(node, theirs))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{theirs}" in res.stderr and "belongs to nobody" in res.stderr
    assert "--stage-dir" in res.stderr  # what to do instead
    assert not Path(f"{node['rec']}.hashes").exists()  # nothing ran
    assert list(theirs.iterdir()) == []  # nothing was copied there


def test_a_folder_others_can_write_is_refused_unless_sticky(node: dict, shared: Path) -> None:
    open_dir = shared / "ours-but-open"
    open_dir.mkdir()
    open_dir.chmod(0o777)  # ours, but anyone may rename what is in it
    res = run_job(node, script_for(node, open_dir / "stage"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"others can write to {open_dir}" in res.stderr and "chmod" in res.stderr
    assert not Path(f"{node['rec']}.hashes").exists()
    open_dir.chmod(0o1777)  # sticky, like /tmp: only the owner of an entry may move it
    res = run_job(node, script_for(node, open_dir / "stage"))
    assert res.returncode == 0, res.stderr
    assert Path(f"{node['rec']}.ran").read_text() == "ours\n"


def test_a_copy_that_differs_from_the_image_is_not_run(node: dict, shared: Path) -> None:
    (node["bin"] / "tee").write_text(  # a disk that corrupts what it writes
        '#!/bin/sh\n/usr/bin/tee "$@"; rc=$?; echo garbage >> "$1"; exit $rc\n'
    )
    res = run_job(node, script_for(node, shared))
    assert res.returncode == 2, res.stdout + res.stderr
    assert "differs from" in res.stderr and str(node["image"]) in res.stderr
    assert not Path(f"{node['rec']}.hashes").exists()
    assert [p.name for p in shared.iterdir()] == []  # the bad copy is gone too
