"""accounts: the user card, login, and (later) the Microsoft 365 connection."""
