"""civic_operator: scales CivicWorkerPool runner pods on River queue depth."""

GROUP = "workers.civic-os.org"
VERSION = "v1alpha1"
PLURAL = "civicworkerpools"
KIND = "CivicWorkerPool"
POOL_LABEL = f"{GROUP}/pool"
