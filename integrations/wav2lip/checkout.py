"""A user's Wav2Lip checkout: where its files are, and whether it has every name the adapter relies on.

Everything here reads the checkout's source with ``ast`` and never imports it: importing a Wav2Lip
training script parses ``sys.argv`` and builds models. ``inspect_checkout`` is what
``python -m integrations.wav2lip.check`` prints and what ``train`` verifies before it starts.
"""
from __future__ import annotations

import ast
import importlib.util
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

SCRIPTS = {"wav2lip": "wav2lip_train.py", "hq": "hq_wav2lip_train.py"}
"""``--script`` choice -> training script file in the checkout root."""
CHECKOUT_FILES = ("hparams.py", "audio.py", "models/__init__.py")
"""Files every Wav2Lip checkout has; a root without them is not one."""
INSTALL_HINTS = {"cv2": "opencv-python-headless", "librosa": "librosa", "scipy": "scipy", "tqdm": "tqdm"}


class CheckoutError(ValueError):
    """The path is not a usable Wav2Lip checkout (one line, shown without traceback by the CLIs)."""


@dataclass(frozen=True)
class Requirement:
    """A name in the checkout that the adapter relies on, and what it does with it."""

    file: str
    name: str
    kind: str  # "function", "global", "import", "main", "argument", "method"
    params: tuple[str, ...] = ()
    """Parameters the adapter needs in the signature (in this order at the start when ``leading``)."""
    leading: bool = False
    use: str = ""


def requirements(script: str) -> list[Requirement]:
    """Names the adapter relies on when it runs ``script`` (``"wav2lip"`` or ``"hq"``)."""
    path = SCRIPTS[script]
    needed = [
        Requirement(path, "--syncnet_checkpoint_path", "argument", use="required by its parser; the adapter supplies it"),
        Requirement(path, "syncnet", "global", use="replaced by the UniSync loss"),
        Requirement(path, "get_sync_loss", "function", ("mel", "g"), leading=True, use="replaced; the original scores --also-log-wav2lip-expert"),
        Requirement(path, "train", "function", ("train_data_loader", "test_data_loader"), use="wrapped: worker counts, --max-steps, timings"),
        Requirement(path, "eval_model", "function", use="wrapped: prints both experts' eval sync losses and the gate"),
        Requirement(path, "load_checkpoint", "function", ("path", "model"), leading=True, use="wrapped: the expert checkpoint is not loaded into `syncnet`"),
        Requirement(path, "hparams", "import", use="syncnet_wt schedule (--sync-weight), --hparams overrides"),
        Requirement(path, "get_image_list", "import", use="wrapped: filelists/ read from the resolved folder"),
        Requirement(path, "global_step", "global", use="step of the schedule and the logs"),
        Requirement(path, "device", "global", use="where the UniSync loss runs"),
        Requirement(path, "syncnet_T", "global", use="checked against the expert's window"),
        Requirement(path, "__main__", "main", use="executed in the imported module, unchanged"),
        Requirement("hparams.py", "get_image_list", "function", ("data_root", "split"), leading=True, use="reads filelists/{split}.txt"),
        Requirement("hparams.py", "hparams", "global", use="HParams with set_hparam, syncnet_wt, num_workers"),
        Requirement("audio.py", "melspectrogram", "function", ("wav",), leading=True, use="preflight of the audio path"),
        Requirement("audio.py", "load_wav", "function", ("path", "sr"), leading=True, use="preflight of the audio path"),
    ]
    if script == "hq":
        needed.append(Requirement("models/wav2lip.py", "Wav2Lip_disc_qual.perceptual_forward", "method", use=".cuda() shim on CPU"))
    return needed


@dataclass
class Finding:
    """The state of one requirement in a checkout: ``"present"``, ``"missing"`` or ``"changed signature"``."""

    requirement: Requirement
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "present"


@dataclass
class Inspection:
    """What ``check`` reports about one checkout and script."""

    root: Path
    script: str
    commit: str | None
    findings: list[Finding]
    missing_packages: list[str] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return all(f.ok for f in self.findings) and not self.missing_packages

    def problems(self) -> list[str]:
        """One line per reason the adapter cannot run."""
        lines = [f"{f.requirement.file}: {f.requirement.name} {f.status}{': ' + f.detail if f.detail else ''}"
                 for f in self.findings if not f.ok]
        lines += [f"python package {name!r} not importable (pip install {INSTALL_HINTS.get(name, name)})"
                  for name in self.missing_packages]
        return lines


def checkout_root(path: str | Path) -> Path:
    """The absolute checkout root; ``CheckoutError`` unless it holds hparams.py, audio.py and models/."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise CheckoutError(f"--wav2lip-root {root}: no such directory (expected a clone of Rudrabha/Wav2Lip)")
    lacking = [name for name in CHECKOUT_FILES if not (root / name).is_file()]
    if lacking:
        raise CheckoutError(
            f"--wav2lip-root {root} is not a Wav2Lip checkout: it lacks {', '.join(lacking)} "
            "(expected the root of a clone of Rudrabha/Wav2Lip or a fork with the same layout)"
        )
    return root


def script_path(root: Path, script: str) -> Path:
    """Path of the training script; ``CheckoutError`` when the checkout does not have it."""
    if script not in SCRIPTS:
        raise CheckoutError(f"--script must be one of {', '.join(SCRIPTS)}, got {script!r}")
    path = root / SCRIPTS[script]
    if not path.is_file():
        raise CheckoutError(f"{root} has no {SCRIPTS[script]} (--script {script}); is it a Wav2Lip checkout of another layout?")
    return path


def git_commit(root: Path) -> str | None:
    """The checked-out commit of ``root`` when it is a git work tree, else ``None``."""
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def main_block(tree: ast.Module) -> ast.If | None:
    """The top-level ``if __name__ == "__main__":`` statement of a parsed script, if any."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1:
            sides = [node.test.left, node.test.comparators[0]]
            names = {s.id for s in sides if isinstance(s, ast.Name)}
            values = {s.value for s in sides if isinstance(s, ast.Constant)}
            if isinstance(node.test.ops[0], ast.Eq) and names == {"__name__"} and values == {"__main__"}:
                return node
    return None


def parse(path: Path) -> ast.Module:
    """The source of ``path`` as an AST (``CheckoutError`` when it is not valid Python)."""
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as error:
        raise CheckoutError(f"{path}: cannot parse it as Python ({error})") from error


def inspect_checkout(root: Path, script: str) -> Inspection:
    """Check every requirement of ``script`` in the checkout ``root`` (already validated by ``checkout_root``)."""
    script_path(root, script)
    trees: dict[str, ast.Module | None] = {}
    findings = []
    for requirement in requirements(script):
        if requirement.file not in trees:
            path = root / requirement.file
            trees[requirement.file] = parse(path) if path.is_file() else None
        findings.append(_find(trees[requirement.file], requirement))
    missing = sorted({name for tree in trees.values() if tree is not None for name in _third_party_imports(tree, root)
                      if importlib.util.find_spec(name) is None})
    return Inspection(root, script, git_commit(root), findings, missing)


def _find(tree: ast.Module | None, requirement: Requirement) -> Finding:
    if tree is None:
        return Finding(requirement, "missing", f"no file {requirement.file}")
    kind, name = requirement.kind, requirement.name
    if kind == "main":
        return Finding(requirement, "present" if main_block(tree) else "missing", "" if main_block(tree) else "no `if __name__ == '__main__':` block")
    if kind == "argument":
        found = any(isinstance(node, ast.Constant) and node.value == name for node in ast.walk(tree))
        return Finding(requirement, "present" if found else "missing")
    if kind == "import":
        found = any(isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names)
                    for node in tree.body)
        return Finding(requirement, "present" if found else "missing")
    if kind == "global":
        found = any(isinstance(node, (ast.Assign, ast.AnnAssign)) and name in _assigned_names(node) for node in tree.body)
        return Finding(requirement, "present" if found else "missing")
    if kind == "method":
        class_name, method = name.split(".")
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
        found = classes and any(isinstance(n, ast.FunctionDef) and n.name == method for n in classes[0].body)
        return Finding(requirement, "present" if found else "missing")
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    if not functions:
        return Finding(requirement, "missing")
    params = [a.arg for a in functions[0].args.posonlyargs + functions[0].args.args]
    wanted = list(requirement.params)
    fits = params[: len(wanted)] == wanted if requirement.leading else set(wanted) <= set(params)
    if fits:
        return Finding(requirement, "present")
    return Finding(requirement, "changed signature", f"has ({', '.join(params)}), the adapter needs ({', '.join(wanted)}{', ...' if requirement.leading else ''})")


def _assigned_names(node: ast.Assign | ast.AnnAssign) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {t.id for target in targets for t in ast.walk(target) if isinstance(t, ast.Name)}


def _third_party_imports(tree: ast.Module, root: Path) -> set[str]:
    """Module names imported at the top of ``tree`` (not inside functions) that are not the checkout's own."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if not (root / f"{name}.py").is_file() and not (root / name).is_dir()}
