"""Run the identity service: ``python -m services.identity``."""

from runtime.app import main
from services.identity.service import SERVICE

if __name__ == "__main__":
    main(SERVICE)
