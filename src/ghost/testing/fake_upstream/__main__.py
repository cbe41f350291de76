"""`python -m ghost.testing.fake_upstream [--port N] [--model NAME]`."""

from ghost.testing.fake_upstream.serve import main

main()
