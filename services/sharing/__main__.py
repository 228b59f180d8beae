"""Run the sharing service: ``python -m services.sharing``."""

from runtime.app import main
from services.sharing.service import SERVICE

if __name__ == "__main__":
    main(SERVICE)
