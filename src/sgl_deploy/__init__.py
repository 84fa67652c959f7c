"""sgl_deploy: the decision-making code of the SGLang/MiniMax Ansible toolkit.

Everything that is a decision or a parser lives here (GPU facts, model profiles, the
planner, server argv building, the probe runner, weights manifests, the redeploy runner);
the Ansible roles only orchestrate and call into it.
"""

__version__ = "0.1.0"
