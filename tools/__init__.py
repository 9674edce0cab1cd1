"""Project tooling: container engine bootstrap, test images and the test runner."""
