"""Entry point: picks the board, then hands over to the application loop.

On a board this file is copied to the filesystem root as `main.py` and the board name comes from
`board.txt`; on the unix port the board and its arguments come from the command line:

    micropython -X heapsize=96K firmware/main.py sim --port 29536 [--realtime] [--config cfg.json]
"""

import sys


def _add_repo_root():
    # On the unix port sys.path[0] is firmware/; the packages `firmware` and `boards` live one up.
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    root = here.rsplit("/", 1)[0] if "/" in here else "."
    if here.endswith("firmware") and root not in sys.path:
        sys.path.insert(0, root)


def _boot_slot(board):
    # Firmware updates (firmware/slots.py): the boot record names the slot to import the firmware
    # from. This file and the factory image's slots module are the boot loader; nothing else of
    # the factory image stays loaded when a slot boots.
    from firmware import slots

    path = slots.choose(board)
    if path:
        for name in list(sys.modules):
            if name == "firmware" or name.startswith("firmware."):
                del sys.modules[name]
        sys.path.insert(0, path)


def main(argv):
    _add_repo_root()
    if len(argv) > 1:
        name, args = argv[1], argv[2:]
    else:
        with open("board.txt") as f:
            name, args = f.read().strip(), []
    board_mod = __import__("boards." + name, None, None, ["from_args"])
    board = board_mod.from_args(args)
    try:
        _boot_slot(board)
        # The configuration first (a cell profile is a large JSON object): its parse garbage is
        # gone before the rest of the firmware's bytecode takes the heap.
        from firmware import config

        cfg = config.from_board(board)
        from firmware import app

        app.run(board, cfg)
    finally:
        # Whatever ends the loop (Ctrl-C from mpremote, a watchdog exit, a bug), the pack is left
        # disconnected: a BMS that stops running must not leave its contactors closed.
        board.set_contactors(0, 0, 0)


main(sys.argv)
