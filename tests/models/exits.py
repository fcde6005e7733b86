"""A model file whose get_model() ends the process the way scripts do."""
import sys


def get_model():
    sys.exit("no GPU found, giving up")


def get_inputs():
    return None
