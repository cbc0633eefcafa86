"""A MAX7800x board on a serial link: the facesdk protocol (:mod:`.protocol`, spec in
``PROTOCOL.md``), the host driver (:mod:`.driver`), a pty simulator of a board running that
protocol on the emulator (:mod:`.simulator`), and the reader of stock msdk demos' UART output
(:mod:`.uart`). A real board needs firmware that speaks ``PROTOCOL.md``; this repository does not
contain such firmware.
"""
