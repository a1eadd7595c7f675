from conceptspace.cli import main

raise SystemExit(main())
