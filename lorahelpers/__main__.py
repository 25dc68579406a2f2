from lorahelpers.cli import main

raise SystemExit(main())
