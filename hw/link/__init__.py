"""The link to a board: the serial host side of the UART stream protocol."""
