import pytest


@pytest.fixture(autouse=True)
def _own_media_root(settings, tmp_path):
    """The storage reads MEDIA_ROOT for files kept before the switch: an empty one here, not
    whatever a developer's var/media holds."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
