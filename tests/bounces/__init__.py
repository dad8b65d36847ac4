"""Tests of the bounce-parsing layer (`bounces/`)."""
