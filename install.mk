# make install, make uninstall. Included by the top-level Makefile.
#   make install [PREFIX=/usr/local] [DESTDIR=/staging/root] [SYSTEMD_UNITDIR=...] [TMPFILESDIR=...]
#   make uninstall with the same variables: removes exactly the files
#   install wrote (INSTALLED below), and the documentation directory.
# Nothing is written to /etc: the daemon's settings file is optional, and
# its example goes to the documentation directory. Units and the .pc file
# are written from templates with the installed paths filled in.

PREFIX          ?= /usr/local
BINDIR          ?= $(PREFIX)/bin
SBINDIR         ?= $(PREFIX)/sbin
LIBDIR          ?= $(PREFIX)/lib
INCLUDEDIR      ?= $(PREFIX)/include
PKGCONFIGDIR    ?= $(LIBDIR)/pkgconfig
MANDIR          ?= $(PREFIX)/share/man
DOCDIR          ?= $(PREFIX)/share/doc/hakmem
SYSTEMD_UNITDIR ?= $(PREFIX)/lib/systemd/system
TMPFILESDIR     ?= $(PREFIX)/lib/tmpfiles.d
INSTALL         ?= install

INSTALLED := $(LIBDIR)/libhakclient.so.$(VERSION) $(LIBDIR)/$(SONAME) $(LIBDIR)/libhakclient.so \
             $(LIBDIR)/libhakclient.a $(INCLUDEDIR)/hakmem.h $(PKGCONFIGDIR)/hakclient.pc \
             $(SBINDIR)/hakmem-pagerd $(BINDIR)/hakctl \
             $(SYSTEMD_UNITDIR)/hakmem-pagerd.service $(SYSTEMD_UNITDIR)/hakmem-pagerd.socket \
             $(TMPFILESDIR)/hakmem-pagerd.conf \
             $(SYSTEMD_UNITDIR)/hakmem-pagerd-metrics.service $(SYSTEMD_UNITDIR)/hakmem-pagerd-metrics.timer \
             $(DOCDIR)/pagerd.conf $(MANDIR)/man1/hakctl.1 $(MANDIR)/man7/hakmem.7 \
             $(MANDIR)/man8/hakmem-pagerd.8

# A directory under the prefix is written as ${prefix}/..., as pkg-config
# files usually are.
pc_dir = $(patsubst $(PREFIX)/%,$${prefix}/%,$(1))
# The library cache knows the new library only after ldconfig; a staged
# install (DESTDIR) or a user's install leaves that to the packager or root.
LDCONFIG = if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then ldconfig; fi

.PHONY: install uninstall
install: all
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSTEMD_UNITDIR) $(DESTDIR)$(DOCDIR) \
	    $(DESTDIR)$(TMPFILESDIR) \
	    $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8
	$(INSTALL) -m 644 $(LIB_SO) $(LIB_A) $(DESTDIR)$(LIBDIR)/
	ln -sf libhakclient.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libhakclient.so
	$(INSTALL) -m 644 include/hakmem.h $(DESTDIR)$(INCLUDEDIR)/
	sed -e 's|@prefix@|$(PREFIX)|' -e 's|@libdir@|$(call pc_dir,$(LIBDIR))|' \
	    -e 's|@includedir@|$(call pc_dir,$(INCLUDEDIR))|' -e 's|@version@|$(VERSION)|' \
	    hakclient.pc.in >$(DESTDIR)$(PKGCONFIGDIR)/hakclient.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/hakclient.pc
	$(INSTALL) -m 755 $(PAGERD_BIN) $(DESTDIR)$(SBINDIR)/
	$(INSTALL) -m 755 $(HAKCTL_BIN) $(DESTDIR)$(BINDIR)/
	sed -e 's|@sbindir@|$(SBINDIR)|' systemd/hakmem-pagerd.service.in \
	    >$(DESTDIR)$(SYSTEMD_UNITDIR)/hakmem-pagerd.service
	chmod 644 $(DESTDIR)$(SYSTEMD_UNITDIR)/hakmem-pagerd.service
	$(INSTALL) -m 644 systemd/hakmem-pagerd.socket $(DESTDIR)$(SYSTEMD_UNITDIR)/
	sed -e 's|@bindir@|$(BINDIR)|' systemd/hakmem-pagerd-metrics.service.in \
	    >$(DESTDIR)$(SYSTEMD_UNITDIR)/hakmem-pagerd-metrics.service
	chmod 644 $(DESTDIR)$(SYSTEMD_UNITDIR)/hakmem-pagerd-metrics.service
	$(INSTALL) -m 644 systemd/hakmem-pagerd-metrics.timer $(DESTDIR)$(SYSTEMD_UNITDIR)/
	$(INSTALL) -m 644 systemd/hakmem-pagerd-pages.conf $(DESTDIR)$(TMPFILESDIR)/hakmem-pagerd.conf
	$(INSTALL) -m 644 systemd/pagerd.conf $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -m 644 man/hakctl.1 $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 644 man/hakmem.7 $(DESTDIR)$(MANDIR)/man7/
	$(INSTALL) -m 644 man/hakmem-pagerd.8 $(DESTDIR)$(MANDIR)/man8/
	@$(LDCONFIG)

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	@$(LDCONFIG)
