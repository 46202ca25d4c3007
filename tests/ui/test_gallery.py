"""Gallery files, teacher-added entries, and exports that carry per-row settings and no server paths."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from explorer.core.results import SETTING_COLUMNS
from explorer.methods.session_io import export_session, import_session
from explorer.ui import edits, gallery
from explorer.ui.session import Session

GALLERY = Path(__file__).resolve().parents[2] / "explorer" / "data" / "gallery"


def test_the_shipped_gallery_has_eight_explained_entries_with_their_readings():
    items = gallery.entries()
    assert len(items) >= 8 and [e.name for e in items] == sorted(e.name for e in items)
    edited = 0
    for e in items:
        data = json.loads(e.path.read_text(encoding="utf-8"))
        assert len(re.findall(r"[.!?](\s|$)", e.explanation)) == 2, e.explanation  # two sentences
        cells = {(r["layer"], r["token"]) for r in data["results"]}
        assert e.selected in cells and len(cells) >= 10
        assert all(r["interpretation"].strip() and r["relevancy_score"] for r in data["results"])
        edited += bool(data["edit"])
    assert edited == 1


def test_a_teacher_adds_an_entry_by_exporting_a_session_into_a_gallery_folder(tmp_path, monkeypatch):
    snap = import_session((GALLERY / "05_pun.json").read_text(encoding="utf-8"))
    snap.extra = {}  # a plain export: no title or explanation
    (tmp_path / "my_lesson.json").write_text(export_session(snap), encoding="utf-8")
    (tmp_path / "notes.json").write_text("{}", encoding="utf-8")  # not a session: ignored
    monkeypatch.setenv("SELFIE_GALLERY_DIR", str(tmp_path))
    names = [e.name for e in gallery.entries()]
    assert names[-1] == "my_lesson" and "notes" not in names
    entry = gallery.find("my_lesson")
    assert entry.title == "my lesson" and snap.prompt in entry.explanation and entry.selected is None


def test_exports_carry_each_rows_settings_and_edit_and_no_server_paths():
    data = json.loads((GALLERY / "08_control_edit.json").read_text(encoding="utf-8"))
    snap = import_session(json.dumps(data))
    secret = "/srv/private/models/cache/SmolLM2-135M-Instruct"
    snap.provenance = {**snap.provenance, "model_source": secret}
    snap.results.provenance = dict(snap.provenance)
    snap.model = "/srv/private/models/tiny.gguf"
    text = export_session(snap)
    csv_text = snap.results.to_csv()
    json_text = snap.results.to_json(with_provenance=True)
    for out in (text, csv_text, json_text):
        assert "/srv/private" not in out
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(rows) == len(data["results"])
    by_cell = {(r["layer"], r["token"]): r for r in data["results"]}
    for row in rows:
        src = by_cell[(int(row["layer"]), int(row["token"]))]
        assert row["variant"] == data["edit"]["edit_id"]
        assert row["template_user"].startswith("What does this refer to")
        assert [row[k] for k in ("n_placeholders", "k", "max_new_tokens")] == [str(src[k]) for k in
                                                                             ("n_placeholders", "k", "max_new_tokens")]
        assert float(row["strength"]) == 1.0 and row["template"] == "refers_to"
    again = import_session(text)
    assert all(c.variant == data["edit"]["edit_id"] and set(c.settings) == set(SETTING_COLUMNS) for c in again.results.cells)


def test_the_results_table_marks_readings_made_under_another_edit():
    snap = import_session((GALLERY / "08_control_edit.json").read_text(encoding="utf-8"))
    sess = Session()
    sess.results = snap.results
    frame = edits.results_frame(sess)  # the session has no edit: every edited reading is stale
    assert list(frame.columns) == edits.TABLE_COLUMNS
    assert all(t.startswith(f"[edit {snap.edit['edit_id']}]") for t in frame["interpretation"])
    assert set(frame["variant"]) == {snap.edit["edit_id"]} and set(frame["k"]) == {1}
    cell = snap.results.cells[0]
    assert "not the model you use now" in edits.stale_note(sess, cell)
    assert edits.current_results(sess).cells == []


def test_a_share_link_id_is_checked_before_any_file_is_read(tmp_path, monkeypatch):
    import pytest

    from explorer.core.errors import InputError

    monkeypatch.setenv("SELFIE_SHARE_DIR", str(tmp_path))
    for bad in ("../../etc/passwd", "abc", ""):
        with pytest.raises(InputError, match="not valid"):
            gallery.open_shared(None, Session(), bad)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no longer exists"):
        gallery.open_shared(None, Session(), "0123456789abcdef")  # type: ignore[arg-type]


def test_a_crafted_or_deeply_nested_file_in_a_gallery_folder_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    crafted = json.loads((GALLERY / "05_pun.json").read_text(encoding="utf-8"))
    crafted["gallery"] = {"selected": ["1", {"x": 2}], "title": "crafted"}
    (tmp_path / "crafted.json").write_text(json.dumps(crafted), encoding="utf-8")
    monkeypatch.setenv("SELFIE_GALLERY_DIR", str(tmp_path))
    found = {e.name: e for e in gallery.entries()}
    assert "deep" not in found
    assert found["crafted"].selected is None and found["crafted"].title == "crafted"


def _shared_session(prompt: str) -> Session:
    """A session holding a real grid of ``prompt`` (no readings): what "Share a link" exports."""
    from explorer.ui import explore
    from explorer.ui.session import AppConfig, ModelRegistry

    s = Session()
    explore.run_prompt(ModelRegistry(AppConfig()), s, "default", prompt, False)
    return s


def test_share_files_are_deduplicated_bounded_and_expire(tmp_path, monkeypatch, lm):
    import os
    import time

    monkeypatch.setenv("SELFIE_SHARE_DIR", str(tmp_path))
    quota = gallery.ShareQuota(max_files=3, max_mb=10, ttl_hours=1)
    a = _shared_session("The Eiffel Tower is in the city of")
    first = gallery.save_shared(a, quota)
    assert gallery.save_shared(a, quota) == first  # the same view twice: one file
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [f"{first}.json"]
    ids = [first] + [gallery.save_shared(_shared_session(f"Prompt number {i}"), quota) for i in range(3)]
    kept = {p.stem for p in tmp_path.glob("*.json")}
    assert len(kept) == 3 and first not in kept and set(ids[1:]) == kept  # the oldest went first
    old = tmp_path / f"{ids[1]}.json"
    os.utime(old, (time.time() - 7200, time.time() - 7200))  # two hours old: past the one-hour life
    gallery.save_shared(_shared_session("Yet another prompt"), quota)
    assert not old.exists()
    from explorer.core.errors import InputError

    tiny = gallery.ShareQuota(max_files=3, max_mb=0.0001, ttl_hours=1)  # about 100 bytes
    with pytest.raises(InputError, match="too large to share"):
        gallery.save_shared(a, tiny)
