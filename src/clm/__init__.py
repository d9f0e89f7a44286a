"""clm: self-hosted customer lifecycle management.

Data flows collect → identity → lifecycle → metrics → analyses, all over one warehouse
(`clm.warehouse`); the CLI, the report and the server are front ends over `Workspace`.
"""

from clm.workspace import Workspace, init
from clm.workspace import open_workspace as open

__all__ = ["Workspace", "init", "open"]
__version__ = "0.1.0"
