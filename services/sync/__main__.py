"""Run the sync service: ``python -m services.sync``."""

from runtime.app import main
from services.sync.service import SERVICE

if __name__ == "__main__":
    main(SERVICE)
