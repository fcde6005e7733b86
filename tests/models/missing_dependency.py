import convdoctor_no_such_package  # noqa: F401
