"""What operating the service needs besides serving it: checks of its environment at start-up."""
