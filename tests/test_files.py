"""Atomic output: a failed or killed writer leaves no half-written file, and its temp file is
swept by the next writer of the same path."""
import argparse
import os
import signal
import subprocess
import sys

import pytest

from fgsd import files
from fgsd.errors import FgsdError


def test_a_failed_write_leaves_neither_the_file_nor_a_temp(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(TypeError):
        files.save_json(target, {"not json": object()})
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writer_leaves_only_a_temp_that_the_next_write_removes(tmp_path):
    target = tmp_path / "out.bin"
    code = ("import sys, time; from fgsd import files\n"
            "with files.atomic_path(sys.argv[1]) as tmp:\n"
            "    open(tmp, 'wb').write(b'half'); print('writing', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert not target.exists() and len(left) == 1 and left[0].startswith(".out.bin.") and left[0].endswith(".tmp")
    (tmp_path / ".other.bin.x.tmp").write_bytes(b"another file's temp")
    files.save_json(target, {"ok": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.bin.x.tmp", "out.bin"]


def test_an_output_under_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(FgsdError, match=r"cannot write .*afile/sub/x\.json: Not a directory"):
        files.save_json(tmp_path / "afile" / "sub" / "x.json", {})


def test_a_log_under_a_file_is_one_line(tmp_path):
    from fgsd.__main__ import run
    (tmp_path / "afile").write_text("")
    with pytest.raises(FgsdError, match=r"cannot write the log .*afile/x\.log: "):
        run(argparse.Namespace(stage="summary", args=[], log=str(tmp_path / "afile" / "x.log")))
