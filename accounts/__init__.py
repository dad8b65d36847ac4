"""accounts: who a user is (the user, the company, the login, the interface language). The
card's mail sender and the providers live in smtp_settings."""
