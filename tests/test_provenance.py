"""Provenance records: the git state they report, and what a stage run in-process records."""
import subprocess

from conftest import ROOT

from fgsd import config, files, provenance


def test_git_state_flags_code_changes_not_results(tmp_path):
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}, "outside git: unknown, not clean"
    git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)
    git("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    git("add", "-A")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "c")
    state = provenance.git_state(tmp_path)
    assert len(state["commit"]) == 40 and state["dirty"] is False
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.csv").write_text("a\n")
    (tmp_path / "dvc.lock").write_text("changed by dvc repro\n")
    assert provenance.git_state(tmp_path)["dirty"] is False, "outputs and dvc.lock are not code"
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    assert provenance.git_state(tmp_path)["dirty"] is True


def test_record_lists_what_the_stage_read_and_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(files, "READ", {})
    monkeypatch.setattr(files, "WRITTEN", {})
    files.save_json("in.json", {"a": 1})
    files.load_json("in.json")
    files.save_json("out.json", {"b": 2})
    files.save_json(".state/resume.json", {"c": 3})  # resumable state is not an output
    cfg = config.load([ROOT / "params.yaml"])
    rec = provenance.record("prov.json", "job_x", cfg, ["seed", "data.crop_size"], ["params.yaml"])
    assert rec["inputs"] == {"in.json": files.sha256("in.json")}
    assert set(rec["outputs"]) == {"in.json", "out.json"} and "prov.json" not in rec["outputs"]
    assert rec["params"] == {"seed": 0, "data.crop_size": 32}
    assert rec["params_sha256"] == config.digest({"seed": 0, "data.crop_size": 32})
    assert files.load_json("prov.json") == rec
    frame = provenance.table("prov.json", "table.csv", "table.html")
    assert sorted(frame.file) == ["in.json", "out.json"] and (tmp_path / "table.html").is_file()


def test_same_checkpoint_gives_the_same_bytes(tmp_path):
    """Checksums in the records are only useful if equal weights give equal files (torch.save to a
    path names the archive after the random temp file)."""
    import torch
    obj = {"w": torch.arange(6.0).reshape(2, 3)}
    files.save_torch(tmp_path / "a.pt", obj)
    files.save_torch(tmp_path / "b.pt", obj)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(files.load_torch(tmp_path / "a.pt")["w"], obj["w"])
