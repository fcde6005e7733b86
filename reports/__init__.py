"""HTML, JSON and terminal reports, read from a Report; they never run models or parse traces."""
