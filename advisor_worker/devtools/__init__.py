"""Development and deployment tools: the tiny test model, random adapters, launchd plists."""
