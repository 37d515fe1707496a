package main

import (
	"context"
	"errors"
)

var errNotBuilt = errors.New("not built yet")

func (a *app) serve(ctx context.Context, args []string) error       { return errNotBuilt }
func (a *app) milterRole(ctx context.Context, args []string) error  { return errNotBuilt }
func (a *app) lookupdRole(ctx context.Context, args []string) error { return errNotBuilt }
func (a *app) apiRole(ctx context.Context, args []string) error     { return errNotBuilt }
func (a *app) deliver(ctx context.Context, args []string) error     { return errNotBuilt }
func (a *app) recompute(ctx context.Context, args []string) error   { return errNotBuilt }
