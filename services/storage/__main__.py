"""Run the storage service: ``python -m services.storage``."""

from runtime.app import main
from services.storage.service import SERVICE

if __name__ == "__main__":
    main(SERVICE)
