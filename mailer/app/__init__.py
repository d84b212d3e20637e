"""Service functions for subscribers and broadcasts, called by the front-ends."""
