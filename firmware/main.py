"""Entry point: picks the board, then hands over to the application loop.

On a board this file is copied to the filesystem root as `main.py` and the board name comes from
`board.txt`; on the unix port the board and its arguments come from the command line:

    micropython -X heapsize=168K firmware/main.py sim --port 29536 [--realtime] [--config cfg.json]
"""

import sys


def _add_repo_root():
    # On the unix port sys.path[0] is firmware/; the packages `firmware` and `boards` live one up.
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    root = here.rsplit("/", 1)[0] if "/" in here else "."
    if here.endswith("firmware") and root not in sys.path:
        sys.path.insert(0, root)


def _purge():
    for name in list(sys.modules):
        if name == "firmware" or name.startswith("firmware."):
            del sys.modules[name]


_slot_path = [None]


def _boot_slot(board):
    # Firmware updates (firmware/bootrec.py): the boot record names the slot to import the firmware
    # from. This file and the factory image's bootrec module are the boot loader; nothing else of
    # the factory image stays loaded when a slot boots.
    from firmware import bootrec

    path = bootrec.choose(board)
    if _slot_path[0] in sys.path:
        sys.path.remove(_slot_path[0])
    _slot_path[0] = path
    if path:
        _purge()
        sys.path.insert(0, path)


def _start(board):
    _boot_slot(board)
    if board.storage_read("progmode") == b"1":
        # The application accepted UDS 0x10 02: this start serves the programming session
        # (contactors open) and the next one is the application again, whatever happens.
        board.storage_write("progmode", b"0")
        from firmware import uds_prog

        uds_prog.run(board)
    try:
        bms = _build(board, True)
    except MemoryError:
        # The application comes first: without the diagnostics' reserve this pack may fit the
        # heap (everything loaded again, so the first attempt leaves no holes); diagnostics then
        # load only if room is left (firmware/diag_port.py).
        print("cellguard: too little heap for the diagnostics' reserve: starting without it")
        _purge()
        import gc

        gc.collect()
        bms = _build(board, False)
    from firmware import app

    app.run(board, bms.cfg, bms)


def _build(board, reserve):
    # The configuration first (a cell profile is a large JSON object): its parse garbage is
    # gone before the rest of the firmware's bytecode takes the heap.
    from firmware import config

    cfg = config.from_board(board)
    import gc

    gc.collect()
    if reserve:
        from firmware import diag_port

        diag_port.reserve()  # contiguous heap for the diagnostic server, before the code fills it
    from firmware import app

    return app.build(board, cfg)


def main(argv):
    _add_repo_root()
    if len(argv) > 1:
        name, args = argv[1], argv[2:]
    else:
        with open("board.txt") as f:
            name, args = f.read().strip(), []
    board_mod = __import__("boards." + name, None, None, ["from_args"])
    board = board_mod.from_args(args)
    # The sim board's reset (UDS 0x11) restarts the firmware in this process, its bus kept, as a
    # board's reset runs main.py again; a board's own reset never returns.
    restart = getattr(board_mod, "Restart", None)
    try:
        while True:
            try:
                _start(board)
                return
            except BaseException as e:  # noqa: BLE001 - only the sim board's restart is caught
                if restart is None or not isinstance(e, restart):
                    raise
                _purge()
                import gc

                gc.collect()
    finally:
        # Whatever ends the loop (Ctrl-C from mpremote, a watchdog exit, a bug), the pack is left
        # disconnected: a BMS that stops running must not leave its contactors closed.
        board.set_contactors(0, 0, 0)


main(sys.argv)
