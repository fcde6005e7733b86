"""The one family of errors a user can cause. The CLI turns each into one line and exit code 2."""


class ConvDoctorError(Exception):
    """An error caused by the user's input, with a message that says what is wrong and what to do."""


class ModelFileError(ConvDoctorError):
    """The model file is missing, cannot be imported, or lacks a usable entry point."""


class ModelTimeoutError(ConvDoctorError):
    """The user's model (or its file) took longer than the time it was given."""


class InputMismatchError(ConvDoctorError):
    """The example inputs do not fit the model."""


class TraceError(ConvDoctorError):
    """A trace file is missing, truncated, or not a Kineto trace."""


class OutputDirError(ConvDoctorError):
    """The output directory cannot be written."""


class ReportError(ConvDoctorError):
    """A report.json to compare is missing, unreadable, or not a convdoctor report."""


class TensorBoardError(ConvDoctorError):
    """TensorBoard cannot start: nothing to show, or the port is taken."""


class JobError(ConvDoctorError):
    """A data-parallel job (--nproc) cannot start, or one of its workers failed."""
