"""The bundled domains. Adding one is one module that calls `register_domain`, imported here."""

from pivotrl.lab.domains import code, repo, search, terminal, tooluse  # noqa: F401

IN_DOMAIN = ("tooluse", "terminal", "search", "code")  # the paper's four; `tooluse_variant` is held out (OOD)
LONG_HORIZON = ("repo",)  # repository repair, 13-21 expert turns: where E2E RL is compared (not in the joint four yet)
from pivotrl.lab.domains.base import Domain, get_domain, list_domains, register_domain  # noqa: F401
from pivotrl.lab import ood as _ood  # noqa: F401,E402  (registers the held-out variant)
