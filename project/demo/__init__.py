"""The example site's demo: the `demo.count` task and the page that starts it."""
