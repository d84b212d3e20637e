"""The course content: manifest, rendering, messages and their headers."""
