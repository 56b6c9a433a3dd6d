"""Run `t2i-train` with faults injected into its own process: `python tests/faults.py ARGS...`, the faults in the
environment variable `T2I_FAULTS` (a JSON list of `fault(...)` dicts). Nothing is mounted or filled: the chosen write
calls of the child raise `OSError(ENOSPC)` (a full disk) after writing part of their data, or pause (so that a test
can send a signal at that exact moment).

A fault's `site` is the call it patches; `match` is a regular expression searched in the path written; `nth` counts
the matching calls (1: the first). Sites:

- `save_file`: `safetensors.torch.save_file` (checkpoints, and the model through diffusers' and transformers' `save_pretrained`)
- `image_save`: `PIL.Image.Image.save` (sample grids, the loss curve through matplotlib)
- `write`: `.write()` on a file opened for writing with `open` / `io.open` / `Path.write_text` (log.csv, JSON files, cache headers)
- `pwrite`: `os.pwrite` (the rows of the disk caches), the path read from `/proc/self/fd`
- `call`: any function, `match` naming it as `module:attribute` (e.g. `text2imagegen.train:load_images`)

An `action` is `enospc` or `pause` (`seconds`); either first writes the line `<pid> <path>` to the file `flag`, if given.
"""
import builtins, errno, importlib, io, json, os, re, sys, time

FAULTS_ENV = "T2I_FAULTS"


def fault(site:str, match:str=".", nth:int=1, action:str="enospc", seconds:float=30.0, flag=None) -> dict:
    "A fault for `T2I_FAULTS`: the `nth` call of `site` whose path matches `match` does `action`."
    assert site in ("save_file", "image_save", "write", "pwrite", "call") and action in ("enospc", "pause"), (site, action)
    return dict(site=site, match=match, nth=nth, action=action, seconds=seconds, flag=None if flag is None else str(flag))


class Fault:
    def __init__(self, site, match, nth, action, seconds, flag):
        self.site, self.match, self.nth, self.action, self.seconds, self.flag = site, match, nth, action, seconds, flag
        self.calls = 0

    def due(self, path) -> bool:
        "Count a call on `path`; True for the call that faults."
        if path is None or not re.search(self.match, os.fspath(path) if not isinstance(path, str) else path): return False
        self.calls += 1
        return self.calls == self.nth

    def fire(self, path, partial=None):
        "Signal the flag, then pause (and return: the real call follows) or write part of the data and raise ENOSPC."
        if self.flag:
            fd = os.open(self.flag, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try: os.write(fd, f"{os.getpid()} {path}\n".encode())
            finally: os.close(fd)
        if self.action == "pause":
            time.sleep(self.seconds)
            return
        if partial is not None: partial()
        raise OSError(errno.ENOSPC, "No space left on device")


def _path_of(fp):
    if isinstance(fp, (str, bytes, os.PathLike)): return os.fsdecode(fp)
    return getattr(fp, "name", None) if isinstance(getattr(fp, "name", None), str) else None


def _half(data):
    return data[:max(1, len(data) // 2)] if len(data) else data


class _FaultyFile:
    "A file object whose `write` goes through a fault."
    def __init__(self, f, path, faults): self._f, self._path, self._faults = f, path, faults
    def write(self, data):
        for ft in self._faults:
            if ft.due(self._path):
                def partial(): self._f.write(_half(data)); self._f.flush()
                ft.fire(self._path, partial)
        return self._f.write(data)
    def writelines(self, lines):
        for line in lines: self.write(line)
    def __getattr__(self, name): return getattr(self._f, name)
    def __enter__(self): self._f.__enter__(); return self
    def __exit__(self, *exc): return self._f.__exit__(*exc)
    def __iter__(self): return iter(self._f)
    def __next__(self): return next(self._f)


def install(faults:list):
    "Patch the sites of `faults` in this process (before text2imagegen is imported)."
    by_site = {}
    for spec in faults: by_site.setdefault(spec["site"], []).append(Fault(**spec))

    if "save_file" in by_site:
        import safetensors.torch
        real_save_file = safetensors.torch.save_file
        def save_file(tensors, filename, metadata=None):
            for ft in by_site["save_file"]:
                if ft.due(_path_of(filename)):
                    def partial():  # a real full disk leaves the start of the file
                        with builtins.open(filename, "wb") as f: f.write(b"\x00" * 4096)
                    ft.fire(filename, partial)
            return real_save_file(tensors, filename, metadata=metadata)
        safetensors.torch.save_file = save_file

    if "image_save" in by_site:
        from PIL import Image
        real_save = Image.Image.save
        def save(self, fp, format=None, **params):
            path = _path_of(fp)
            for ft in by_site["image_save"]:
                if ft.due(path):
                    def partial():
                        if isinstance(fp, (str, bytes, os.PathLike)):
                            with builtins.open(fp, "wb") as f: f.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
                        else: fp.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
                    ft.fire(path, partial)
            return real_save(self, fp, format, **params)
        Image.Image.save = save

    if "write" in by_site:
        real_open = builtins.open
        def open_(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            path = _path_of(file) if not isinstance(file, int) else None
            if path is not None and any(c in mode for c in "wax+") and any(re.search(ft.match, path) for ft in by_site["write"]):
                return _FaultyFile(f, path, by_site["write"])
            return f
        builtins.open = io.open = open_

    if "pwrite" in by_site:
        real_pwrite = os.pwrite
        def pwrite(fd, data, offset):
            try: path = os.readlink(f"/proc/self/fd/{fd}")
            except OSError: path = None
            for ft in by_site["pwrite"]:
                if ft.due(path): ft.fire(path, lambda: real_pwrite(fd, bytes(memoryview(data).cast("B")[:max(1, len(data) // 2)]), offset))
            return real_pwrite(fd, data, offset)
        os.pwrite = pwrite

    for ft in by_site.get("call", []):
        module, attr = ft.match.split(":")
        mod = importlib.import_module(module)
        real = getattr(mod, attr)
        def wrapped(*args, _ft=ft, _real=real, **kwargs):
            if _ft.due(_ft.match): _ft.fire(_ft.match)
            return _real(*args, **kwargs)
        setattr(mod, attr, wrapped)


if __name__ == "__main__":
    install(json.loads(os.environ.get(FAULTS_ENV, "[]")))
    from text2imagegen.cli import train_command
    sys.argv = ["t2i-train", *sys.argv[1:]]
    train_command()
