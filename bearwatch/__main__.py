from bearwatch.cli import main

raise SystemExit(main())
