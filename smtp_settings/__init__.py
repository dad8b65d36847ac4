"""smtp_settings: sender profiles, encrypted secrets, sender resolution, the `sender` command."""
