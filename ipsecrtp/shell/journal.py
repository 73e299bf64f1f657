"""The controller's journal: one small JSON file per keyed call in its state directory, written
atomically (a temporary file renamed over the old one), so that a restarted controller knows which
live SAs are whose (gateway/adoption.py). Holds no key material: tags, flows, names."""

from __future__ import annotations

import hashlib
import json
import os


class Journal:
    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def _path(self, call_id: str) -> str:
        return os.path.join(self.dir, hashlib.sha256(call_id.encode()).hexdigest()[:24] + ".json")

    def write(self, call_id: str, entry: dict) -> None:
        path = self._path(call_id)
        tmp = path + ".tmp"
        # no fsync: the journal outlives a controller (a crash, a restart, an upgrade), for which
        # the page cache suffices; what it describes, charon's SAs and the kernel's state, does
        # not outlive the machine, so a journal kept across a power loss would name nothing alive.
        # fsync was 12-18 % of the controller's loop at load (bench load's py-spy profile)
        with open(tmp, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, path)

    def delete(self, call_id: str) -> None:
        try:
            os.unlink(self._path(call_id))
        except FileNotFoundError:
            pass

    def load(self) -> list[dict]:
        out = []
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.dir, name)) as f:
                    entry = json.load(f)
            except (OSError, ValueError):
                continue  # a torn or foreign file: not ours to adopt
            if isinstance(entry, dict) and entry.get("call_id"):
                out.append(entry)
        return out

    def clear(self) -> None:
        for entry in self.load():
            self.delete(entry["call_id"])
