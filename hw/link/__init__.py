"""The link to a board: the serial host side of the UART stream protocol (:mod:`hw.link.host`), the
rates it runs at and what it carries (:mod:`hw.link.rates`), and the board's end built for the
accelerator (:mod:`hw.link.board`)."""
