"""Run the social service: ``python -m services.social``."""

from runtime.app import main
from services.social.service import SERVICE

if __name__ == "__main__":
    main(SERVICE)
